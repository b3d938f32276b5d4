"""The rival losses (DPO family, KTO, TDPO, SimPO/ORPO/SFT) pinned where tests/test_losses.py is loose.

tests/test_losses.py checks every formula, but leaves gaps that mutation testing found:

- error messages are matched on a bare field name (`match="beta"`), so a message that names
  the wrong loss ("None: beta ...") or a mangled field passes. Here each message is matched
  from its start: "<loss>: <field> must ...", the form `trainers/losses/base.py` documents;
- KTO's and TDPO's metrics other than the ones checked there (rewards/margins, logps/*,
  kl/chosen) and SFT's nll_loss are compared with values computed in this file;
- the theory targets (`optimal_logprobs`) are only called on one bandit prompt ([K] rewards).
  They are written for leading batch dimensions ([..., K], as `win_probabilities` documents
  [..., K, K]: every reduction is over the last axis, `keepdim`, `diag_embed`, batched
  `pinv`), so a batch of prompts must give each row the target of that row alone. The rows
  here are checked against targets written out independently in this file (plain loops,
  a least-squares solve on the pair design matrix).

Tolerance: float64 throughout and every expected value is a few elementary operations (or
one small least-squares solve, condition number < 1e3), so rounding is ~1e-13 at worst;
1e-9 is far above that and far below any formula mistake (O(0.1) changes).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from trainers.losses import (
    CDPOLoss,
    DPOLoss,
    GDPOLoss,
    GIPOLoss,
    HingeLoss,
    IPOLoss,
    KTOLoss,
    RDPOLoss,
    SimPOLoss,
    TDPOLoss,
    get_loss,
)

TOL = 1e-9


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=0, atol=TOL)


# ---------------------------------------------------------------- hyperparameter messages


@pytest.mark.parametrize("cls", [DPOLoss, IPOLoss, HingeLoss, CDPOLoss, RDPOLoss, GDPOLoss,
                                 GIPOLoss, TDPOLoss, KTOLoss, SimPOLoss])
@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan])
def test_beta_message_names_the_loss_and_the_field(cls: type, beta: float) -> None:
    """A bad beta raises "<loss>: beta must be positive ..." naming the loss and the field."""
    name = cls.__dataclass_fields__["name"].default
    with pytest.raises(ValueError, match=rf"^{name}: beta must be positive \(finite, > 0\), "
                                         rf"got {re.escape(repr(beta))}$"):
        cls(beta=beta)


@pytest.mark.parametrize("name,key,field_name", [
    ("kto", "desirable_weight", "desirable_weight"),
    ("kto", "undesirable_weight", "undesirable_weight"),
    ("tdpo", "alpha", "alpha"),
    ("simpo", "gamma", "gamma"),
    ("orpo", "lambda", "lam"),
])
def test_nonnegative_message_names_the_loss_and_the_field(name: str, key: str,
                                                          field_name: str) -> None:
    """A negative weight raises "<loss>: <public name> must be >= 0 ..." (lambda, not lam)."""
    with pytest.raises(ValueError, match=rf"^{name}: {key} must be >= 0 \(and finite\), "
                                         r"got -0\.5$"):
        get_loss(name, **{key: -0.5})
    cls = type(get_loss(name))
    with pytest.raises(ValueError, match=rf"^{name}: {key} must be >= 0"):
        cls(**{field_name: math.inf})


@pytest.mark.parametrize("name", ["cdpo", "rdpo", "robust"])
def test_label_smoothing_message_names_the_loss(name: str) -> None:
    """label_smoothing outside [0, 1/2) names the canonical loss (rdpo for the alias)."""
    canonical = "rdpo" if name == "robust" else name
    with pytest.raises(ValueError, match=rf"^{canonical}: label_smoothing must lie in "
                                         r"\[0, 0\.5\), got 0\.5$"):
        get_loss(name, label_smoothing=0.5)


# ---------------------------------------------------------------- KTO


def _kto_inputs() -> dict[str, torch.Tensor]:
    """Six completions, three desirable, with hand-picked log-probs (z0 > 0 here)."""
    f = torch.float64
    return {
        "policy_logps": torch.tensor([-1.0, -2.0, -3.5, -0.5, -4.0, -2.5], dtype=f),
        "ref_logps": torch.tensor([-1.5, -1.0, -3.0, -2.0, -3.0, -2.0], dtype=f),
        "desirable": torch.tensor([True, False, True, False, True, False]),
        "kl_logps_policy": torch.tensor([-2.0, -1.0, -3.0, -1.0], dtype=f),
        "kl_logps_ref": torch.tensor([-2.5, -2.0, -3.0, -1.5], dtype=f),
    }


def test_kto_metrics_by_hand() -> None:
    """Every KTO metric against hand-computed means over the desirable/undesirable split.

    r = l - l^ref = [0.5, -1, -0.5, 1.5, -1, -0.5]; desirable are items 0, 2, 4, so with
    beta = 0.5: rewards/chosen = 0.5 * mean(0.5, -0.5, -1) = -1/6, rewards/rejected =
    0.5 * mean(-1, 1.5, -0.5) = 0; logps/chosen = mean(-1, -3.5, -4) = -17/6, logps/rejected =
    mean(-2, -0.5, -2.5) = -5/3; kl = clamp(mean(0.5, 1, 0, 0.5), 0) = 0.5.
    """
    m = KTOLoss(beta=0.5)(**_kto_inputs()).metrics
    expected = {"rewards/chosen": -1 / 6, "rewards/rejected": 0.0,
                "rewards/margins": -1 / 6 - 0.0, "logps/chosen": -17 / 6,
                "logps/rejected": -5 / 3, "kl": 0.5}
    assert set(m) == set(expected)
    for k, v in expected.items():
        assert m[k].item() == pytest.approx(v, abs=TOL), k


def test_kto_losses_by_hand() -> None:
    """Two completions, z0 = 0.5: the desirable and undesirable formulas from the docstring."""
    f = torch.float64
    x = {"policy_logps": torch.tensor([-1.0, -1.0], dtype=f),
         "ref_logps": torch.tensor([-2.0, -3.0], dtype=f),
         "desirable": torch.tensor([True, False]),
         "kl_logps_policy": torch.tensor([-1.0], dtype=f),
         "kl_logps_ref": torch.tensor([-1.5], dtype=f)}
    out = KTOLoss(beta=2.0, desirable_weight=0.7, undesirable_weight=1.3)(**x)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = torch.tensor([0.7 * (1 - sig(2.0 * (1.0 - 0.5))),
                             1.3 * (1 - sig(2.0 * (0.5 - 2.0)))], dtype=f)
    _close(out.losses, expected)
    m = out.metrics
    assert m["rewards/margins"].item() == pytest.approx(2.0 * 1.0 - 2.0 * 2.0, abs=TOL)


def test_kto_error_messages() -> None:
    """KTO's input errors list exactly what it needs, comma separated, as users read them."""
    x = _kto_inputs()
    loss = KTOLoss()
    with pytest.raises(TypeError, match=r"call it with policy_logps, ref_logps, desirable, "
                                        r"kl_logps_policy, kl_logps_ref$"):
        loss(**x, policy_chosen_logps=x["policy_logps"])
    with pytest.raises(ValueError, match=r"^kto needs ref_logps, kl_logps_policy, "
                                         r"kl_logps_ref$"):
        loss(policy_logps=x["policy_logps"], desirable=x["desirable"])
    bad = re.escape("kto: desirable must be a bool tensor shaped like policy_logps")
    with pytest.raises(ValueError, match=rf"^{bad}$"):
        loss(**dict(x, desirable=x["desirable"].long()))
    with pytest.raises(ValueError, match=rf"^{bad}$"):
        loss(**dict(x, desirable=x["desirable"][:4]))


# ---------------------------------------------------------------- TDPO


def _tdpo_inputs() -> dict[str, torch.Tensor]:
    f = torch.float64
    return {"policy_chosen_logps": torch.tensor([-1.0, -2.0, -3.0], dtype=f),
            "policy_rejected_logps": torch.tensor([-2.0, -2.5, -1.0], dtype=f),
            "ref_chosen_logps": torch.tensor([-1.5, -2.0, -2.0], dtype=f),
            "ref_rejected_logps": torch.tensor([-1.0, -3.0, -1.5], dtype=f),
            "chosen_token_kl": torch.tensor([0.1, 0.4, 1.0], dtype=f),
            "rejected_token_kl": torch.tensor([0.2, 0.8, 2.0], dtype=f)}


def test_tdpo_kl_metrics_by_hand() -> None:
    """kl/chosen and kl/rejected are the batch means of D_w and D_l: 0.5 and 1.0 here."""
    m = TDPOLoss()(**_tdpo_inputs()).metrics
    assert m["kl/chosen"].item() == pytest.approx(0.5, abs=TOL)
    assert m["kl/rejected"].item() == pytest.approx(1.0, abs=TOL)
    assert {"kl/chosen", "kl/rejected", "rewards/chosen", "rewards/margins"} <= set(m)


def test_tdpo_missing_token_kl_message() -> None:
    """Without D_w/D_l the message says what they are (sums of KL(pi_ref || pi_theta))."""
    x = _tdpo_inputs()
    del x["rejected_token_kl"]
    msg = re.escape("tdpo needs chosen_token_kl and rejected_token_kl: per-sequence sums of "
                    "KL(pi_ref || pi_theta) over completion positions")
    with pytest.raises(ValueError, match=rf"^{msg}$"):
        TDPOLoss()(**x)


# ---------------------------------------------------------------- SFT


def test_sft_nll_metric_is_the_token_mean_nll_of_chosen() -> None:
    """nll_loss = mean(-l_w / |y_w|) = mean(6/3, 2/4) = 1.25 (rejected completions ignored)."""
    f = torch.float64
    x = {"policy_chosen_logps": torch.tensor([-6.0, -2.0], dtype=f),
         "policy_rejected_logps": torch.tensor([-1.0, -9.0], dtype=f),
         "chosen_lengths": torch.tensor([3, 4]), "rejected_lengths": torch.tensor([5, 2])}
    m = get_loss("sft")(**x).metrics
    assert m["nll_loss"].item() == pytest.approx(1.25, abs=TOL)


# ---------------------------------------------------------------- batched theory targets


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _log_softmax(v: list[float]) -> list[float]:
    m = max(v)
    lse = m + math.log(sum(math.exp(a - m) for a in v))
    return [a - lse for a in v]


def _ipo_row(r: list[float], ref: list[float], beta: float) -> list[float]:
    """x_i = (1/(beta K)) sum_j (p_ij - 1/2), the IPO docstring's least-squares solution."""
    k = len(r)
    x = [sum(_sig(r[i] - r[j]) - 0.5 for j in range(k)) / (beta * k) for i in range(k)]
    return _log_softmax([a + b for a, b in zip(ref, x)])


def _gipo_row(r: list[float], ref: list[float], beta: float) -> list[float]:
    """argmin_x sum_{i<j} ((2p_ij - 1)(x_i - x_j) - 1/(2 beta))^2, by least squares.

    This is GIPO's summed pair loss on one-token answers (h_bar = h = x_i - x_j), minimised
    directly on the pair design matrix rather than through the Laplacian normal equations.
    """
    k = len(r)
    rows, rhs = [], []
    for i in range(k):
        for j in range(i + 1, k):
            s = 2 * _sig(r[i] - r[j]) - 1
            row = [0.0] * k
            row[i], row[j] = s, -s
            rows.append(row)
            rhs.append(1 / (2 * beta))
    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(rhs, dtype=torch.float64).unsqueeze(-1)
    x = torch.linalg.lstsq(a, b, driver="gelsd").solution.squeeze(-1)
    return _log_softmax([p + q for p, q in zip(ref, x.tolist())])


def _borda_row(r: list[float]) -> list[float]:
    """log pi_i with pi_i proportional to sum_{j != i} sigmoid(r_i - r_j)."""
    w = [sum(_sig(r[i] - r[j]) for j in range(len(r)) if j != i) for i in range(len(r))]
    return [math.log(a / sum(w)) for a in w]


def _rewards_and_ref(shape: tuple[int, ...] = (2, 3, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards and normalised reference log-probs with two batch axes: [2, 3] prompts of K = 5.

    All three sizes differ, so a reduction or reshape over the wrong axis cannot go unseen.
    """
    g = torch.Generator().manual_seed(5)
    r = torch.randn(*shape, generator=g, dtype=torch.float64) * 1.5
    ref = torch.log_softmax(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)
    return r, ref


@pytest.mark.parametrize("name,kw,row", [
    ("ipo", {"beta": 0.4}, lambda r, ref: _ipo_row(r, ref, 0.4)),
    ("gipo", {"beta": 0.4}, lambda r, ref: _gipo_row(r, ref, 0.4)),
    ("sft", {}, lambda r, ref: _borda_row(r)),
    ("orpo", {"lambda": 0.0}, lambda r, ref: _borda_row(r)),
])
def test_targets_treat_each_batch_row_as_its_own_prompt(name: str, kw: dict, row) -> None:
    """Batched [..., K] targets equal, prompt by prompt, the target written out here."""
    r, ref = _rewards_and_ref()
    out = get_loss(name, **kw).optimal_logprobs(r, ref)
    k = r.shape[-1]
    flat_r, flat_ref = r.reshape(-1, k), ref.reshape(-1, k)
    expected = torch.tensor([row(flat_r[i].tolist(), flat_ref[i].tolist())
                             for i in range(len(flat_r))], dtype=torch.float64)
    _close(out, expected.reshape(r.shape))
    one = get_loss(name, **kw).optimal_logprobs(flat_r[4], flat_ref[4])
    _close(one, expected[4])
