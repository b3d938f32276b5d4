"""Pins for the loss core: registration, hyperparameter coercion, the shared pairwise call
path, SPO (pairs, weights, Plackett-Luce lists) and SPPO's validation (METHODS.md §0, §1, §5).

These tests close gaps that mutation testing found in tests/test_losses.py: the exact
user-facing error messages (each names the loss and the field), boundary values of the
validators, dtype handling (the loss follows the log-probs' dtype), and `register_loss`
itself, which normally runs only at import time and is therefore exercised here on small
throw-away loss classes registered into a private copy of the registry.

Tolerance: float64 closed forms of a handful of elementary operations, so rounding is a
few ulp; 1e-12 absolute is far above that noise and far below any formula mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

from trainers.losses import LOSSES, PairwiseLoss, SPOLoss, get_loss, register_loss, spo_list_loss
from trainers.losses.base import Pairs, neg_log_sigmoid

TOL = 1e-12


def _lp(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sequence log-probs: negative, spread over a few nats."""
    g = torch.Generator().manual_seed(seed)
    return (-torch.rand(n, generator=g, dtype=torch.float64) * 8.0).to(dtype)


def _pairs(n: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict:
    return {"policy_chosen_logps": _lp(n, seed, dtype),
            "policy_rejected_logps": _lp(n, seed + 1, dtype),
            "ref_chosen_logps": _lp(n, seed + 2, dtype),
            "ref_rejected_logps": _lp(n, seed + 3, dtype)}


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(a, b, rtol=0.0, atol=tol)


# ------------------------------------------------------------------ register_loss


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made in a test go into a copy of LOSSES' table, restored afterwards."""
    monkeypatch.setattr(LOSSES, "_entries", dict(LOSSES._entries))


def _register_toy() -> type:
    """A tiny pairwise loss with one field of each coerced type and a renamed field."""

    @register_loss("toy_core", "toy_core_alias", renames={"lambda": "lam"})
    @dataclass
    class ToyLoss(PairwiseLoss):
        """Toy loss: lam * (pc - pr)."""

        lam: float = 0.5
        n: int = 1
        flag: bool = False
        mode: str = "a"
        name: str = field(default="toy_core", init=False)
        requires_reference = False

        def pair_losses(self, b: Pairs, p: torch.Tensor | None) -> torch.Tensor:
            return self.lam * (b.pc - b.pr)

        def metrics(self, b: Pairs) -> dict[str, torch.Tensor]:
            return {}

    return ToyLoss


def test_register_loss_builds_a_named_factory_under_every_name(private_registry) -> None:
    """Both names map to one factory named after the canonical name, carrying the class
    and its docstring; the decorator returns the class unchanged."""
    cls = _register_toy()
    factory = LOSSES.get("toy_core")
    assert LOSSES.get("toy_core_alias") is factory
    assert factory.__name__ == "make_toy_core"
    assert factory.__doc__ == cls.__doc__ == "Toy loss: lam * (pc - pr)."
    assert factory.loss_class is cls
    assert cls.__name__ == "ToyLoss"


def test_register_loss_renames_and_coerces(private_registry) -> None:
    """`lambda` reaches the `lam` field, YAML ints become floats for float fields, and the
    other (unrenamed) fields keep their own names."""
    _register_toy()
    loss = get_loss("toy_core", **{"lambda": 2}, n=3, flag=True, mode="b")
    assert type(loss.lam) is float and loss.lam == 2.0
    assert loss.n == 3 and loss.flag is True and loss.mode == "b"
    out = loss(policy_chosen_logps=torch.tensor([1.0, 3.0], dtype=torch.float64),
               policy_rejected_logps=torch.tensor([0.0, 1.0], dtype=torch.float64))
    _close(out.losses, torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert get_loss("toy_core_alias").lam == 0.5


def test_register_loss_refuses_the_field_name_of_a_renamed_field(private_registry) -> None:
    """Once `lam` is published as `lambda`, `lam` is unknown; the TypeError names the
    canonical loss, the unknown keys sorted and the public names of the known ones."""
    _register_toy()
    for name in ("toy_core", "toy_core_alias"):
        with pytest.raises(TypeError, match=re.escape(
                "toy_core got unknown hyperparameters ['lam', 'zz']; "
                "known: lambda, n, flag, mode")):
            get_loss(name, zz=1, lam=1.0)


def test_register_loss_without_fields_says_none(private_registry) -> None:
    """A loss without init fields answers any hyperparameter with `known: (none)`."""

    @register_loss("toy_core_empty")
    @dataclass
    class EmptyLoss(PairwiseLoss):
        name: str = field(default="toy_core_empty", init=False)

    assert isinstance(get_loss("toy_core_empty"), EmptyLoss)
    with pytest.raises(TypeError, match=re.escape(
            "toy_core_empty got unknown hyperparameters ['x']; known: (none)")):
        get_loss("toy_core_empty", x=1)


@pytest.mark.parametrize("key,value,kind", [
    ("lambda", "1.0", "a number"), ("lambda", True, "a number"),
    ("n", 1.5, "an integer"), ("n", False, "an integer"),
    ("flag", 1, "true or false"), ("mode", 3, "a string"),
])
def test_register_loss_refuses_wrong_types_naming_loss_and_key(private_registry, key: str,
                                                                value, kind: str) -> None:
    """The factory's type check names the canonical loss, the public key and the kind."""
    _register_toy()
    msg = f"toy_core: {key} must be {kind}, got {value!r}"
    for name in ("toy_core", "toy_core_alias"):
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
            get_loss(name, **{key: value})


@pytest.mark.parametrize("name,kw,msg", [
    ("spo", {"alpha": "2"}, "spo: alpha must be a number, got '2'"),
    ("spo", {"reg_prompts_per_step": 2.0}, "spo: reg_prompts_per_step must be an integer, "
                                           "got 2.0"),
    ("spo", {"kl_estimator": 1}, "spo: kl_estimator must be a string, got 1"),
    ("tdpo", {"tdpo2": "yes"}, "tdpo: tdpo2 must be true or false, got 'yes'"),
])
def test_builtin_losses_refuse_wrong_types(name: str, kw: dict, msg: str) -> None:
    """The same messages on the registered built-in losses (a YAML config's typos)."""
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        get_loss(name, **kw)


# ------------------------------------------------------------------ PairwiseLoss.__call__


def test_soft_label_range_message() -> None:
    """A soft label outside [0, 1] is refused with exactly this message."""
    with pytest.raises(ValueError, match="^" + re.escape("soft_labels must lie in [0, 1]") + "$"):
        get_loss("spo")(**_pairs(), soft_labels=torch.full((6,), 1.5, dtype=torch.float64))


def test_lengths_required_even_if_only_one_is_missing() -> None:
    """weight='gamma' needs both lengths: giving only one is the same error, naming both."""
    b = _pairs()
    lens = torch.arange(1, 7)
    for kw in ({"chosen_lengths": lens}, {"rejected_lengths": lens}):
        with pytest.raises(ValueError, match=re.escape(
                "spo needs chosen_lengths and rejected_lengths (completion token counts)")):
            get_loss("spo", weight="gamma")(**b, **kw)


def test_zero_rejected_length_is_refused() -> None:
    """A completion length of 0 is refused with its own message (not a NaN downstream)."""
    b = _pairs()
    ones = torch.ones(6, dtype=torch.int64)
    zero = ones.clone()
    zero[2] = 0
    for lc, lr in ((zero, ones), (ones, zero)):
        with pytest.raises(ValueError, match="spo: completion lengths must be positive"):
            get_loss("spo", weight="gamma")(**b, chosen_lengths=lc, rejected_lengths=lr)


def test_weight_fn_sees_lengths_as_logprob_dtype_or_none() -> None:
    """weight_fn(pc, pr, lc, lr) gets both lengths converted to the log-probs' dtype, and
    None for both unless both are given (a lone length is ignored, not half-used)."""
    seen: list[tuple] = []

    def weight_fn(pc, pr, lc, lr):
        seen.append((lc, lr))
        return torch.ones_like(pc)

    loss = get_loss("spo", weight_fn=weight_fn)
    b = _pairs()
    lc, lr = torch.arange(1, 7), torch.arange(11, 17)
    loss(**b, chosen_lengths=lc, rejected_lengths=lr)
    loss(**b)
    loss(**b, chosen_lengths=lc)
    loss(**b, rejected_lengths=lr)
    (glc, glr), *rest = seen
    assert glc.dtype == glr.dtype == torch.float64
    torch.testing.assert_close(glc, lc.double(), rtol=0, atol=0)
    torch.testing.assert_close(glr, lr.double(), rtol=0, atol=0)
    assert rest == [(None, None)] * 3


def test_float64_soft_labels_do_not_promote_float32_losses() -> None:
    """Soft labels are cast to the log-probs' dtype: float32 log-probs give float32 losses,
    equal to the expected-label formula p l(w, l) + (1 - p) l(l, w) computed in float32."""
    b = _pairs(dtype=torch.float32)
    p = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)
    out = get_loss("spo", alpha=2.0)(**b, soft_labels=p)
    assert out.losses.dtype == torch.float32
    d = b["policy_chosen_logps"] - b["policy_rejected_logps"]
    p32 = p.float()
    expected = p32 * F.softplus(-2.0 * d) / 2.0 + (1 - p32) * F.softplus(2.0 * d) / 2.0
    torch.testing.assert_close(out.losses, expected, rtol=1e-6, atol=1e-6)


def test_reward_metrics_ties_are_not_accurate_and_rejected_logps_logged() -> None:
    """rewards/accuracies counts strict wins only (TRL: chosen > rejected): a tie is not a
    correct ranking; logps/rejected is the mean rejected log-prob."""
    pc = torch.tensor([-1.0, -2.0, -3.0, -4.0], dtype=torch.float64)
    pr = torch.tensor([-1.0, -3.0, -3.0, -1.0], dtype=torch.float64)
    m = get_loss("spo", alpha=0.5)(policy_chosen_logps=pc, policy_rejected_logps=pr).metrics
    assert m["rewards/accuracies"].item() == 0.25
    assert m["logps/rejected"].item() == pytest.approx(-2.0, abs=TOL)
    assert m["rewards/rejected"].item() == pytest.approx(-1.0, abs=TOL)


# ------------------------------------------------------------------ SPO validation


@pytest.mark.parametrize("kw,msg", [
    ({"alpha": 0.0}, "spo: alpha must be positive (finite, > 0), got 0.0"),
    ({"lambda": -1.0}, "spo: lambda must be >= 0 (and finite), got -1.0"),
    ({"gamma": -0.5}, "spo: gamma must be >= 0 (and finite), got -0.5"),
    ({"kl_estimator": "k2"},
     "spo: kl_estimator must be one of exact, k1, k3, reference, got 'k2'"),
    ({"weight": "entropy"}, "spo: weight must be one of none, gamma, got 'entropy'"),
    ({"weight_fn": 3}, "spo: weight_fn must be callable(pc, pr, len_w, len_l) -> Tensor"),
    ({"weight": "gamma", "weight_fn": lambda *a: a[0]},
     "spo: give either weight='gamma' or a weight_fn, not both"),
    ({"reg_prompts_per_step": 0}, "spo: reg_prompts_per_step must be positive"),
    ({"reg_samples_per_prompt": 0}, "spo: reg_samples_per_prompt must be positive"),
    ({"reg_max_new_tokens": -1}, "spo: reg_max_new_tokens must be positive"),
])
def test_spo_validation_messages(kw: dict, msg: str) -> None:
    """Each bad SPO hyperparameter is refused with a message naming loss and field."""
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        get_loss("spo", **kw)


def test_spo_weight_fn_output_messages() -> None:
    """Bad weight_fn output: wrong shape names both shapes; negatives get their own message."""
    b = _pairs()
    with pytest.raises(ValueError, match=re.escape("spo: weights must have shape (6,), got (5,)")):
        get_loss("spo", weight_fn=lambda *a: torch.ones(5))(**b)
    bad = torch.ones(6)
    bad[0] = -1.0
    with pytest.raises(ValueError, match="^" + re.escape("spo: weights must be finite and >= 0")
                       + "$"):
        get_loss("spo", weight_fn=lambda *a: bad)(**b)


def test_spo_weights_follow_logprob_dtype() -> None:
    """weight_fn's output is cast to the log-probs' dtype: float32 log-probs with float64
    weights give float32 losses and a float32 weights/mean (no silent promotion)."""
    b = _pairs(dtype=torch.float32)
    w = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    out = get_loss("spo", weight_fn=lambda *a: w)(**b)
    assert out.losses.dtype == torch.float32
    assert out.metrics["weights/mean"].dtype == torch.float32
    d = b["policy_chosen_logps"] - b["policy_rejected_logps"]
    torch.testing.assert_close(out.losses, w.float() * F.softplus(-d), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ SPO lists


def _pl_ranked(lp: torch.Tensor, a: float) -> torch.Tensor:
    """Plackett-Luce -(1/a) sum_k log(pi_k^a / sum_{j>=k} pi_j^a), by explicit loops."""
    out = []
    for row in lp.tolist():
        tot = 0.0
        for k in range(len(row) - 1):
            tail = torch.tensor([a * x for x in row[k:]], dtype=torch.float64).logsumexp(0)
            tot -= (a * row[k] - tail.item()) / a
        out.append(tot)
    return torch.tensor(out, dtype=torch.float64)


def test_list_loss_default_is_ranked() -> None:
    """Without `ranked`, both spo_list_loss and SPOLoss.list_loss use the full ranking."""
    lp = torch.stack([_lp(4, 40), _lp(4, 41), _lp(4, 42)])
    expected = _pl_ranked(lp, 1.5)
    _close(spo_list_loss(lp, 1.5), expected)
    _close(SPOLoss(alpha=1.5).list_loss(lp).losses, expected)
    # best-of-n differs from the ranked loss for n = 4, so the default is observable
    assert (spo_list_loss(lp, 1.5, ranked=False) - expected).abs().max() > 1e-3


def test_list_loss_metrics_match_hand_formulas() -> None:
    """List metrics: alpha * l of the best vs the mean of the others (n = 4, alpha = 3)."""
    lp = torch.tensor([[-1.0, -2.0, -4.0, -9.0],
                       [-5.0, -1.0, -3.0, -2.0]], dtype=torch.float64)
    a = 3.0
    m = SPOLoss(alpha=a).list_loss(lp).metrics
    assert set(m) == {"rewards/chosen", "rewards/rejected", "rewards/margins",
                      "rewards/accuracies", "logps/chosen", "logps/rejected"}
    # best: (-1, -5) -> mean -3; others: (-2-4-9-1-3-2)/6 = -21/6 = -3.5
    assert m["rewards/chosen"].item() == pytest.approx(a * -3.0, abs=TOL)
    assert m["rewards/rejected"].item() == pytest.approx(a * -3.5, abs=TOL)
    # margins per list: -1 - (-5) = 4 and -5 - (-2) = -3 -> mean 0.5
    assert m["rewards/margins"].item() == pytest.approx(a * 0.5, abs=TOL)
    assert m["rewards/accuracies"].item() == 0.5
    assert m["logps/chosen"].item() == pytest.approx(-3.0, abs=TOL)
    assert m["logps/rejected"].item() == pytest.approx(-3.5, abs=TOL)


def test_list_loss_refuses_weights_with_message() -> None:
    """Weighted SPO is pairwise only: list_loss refuses either kind of weight, saying so."""
    msg = ("spo: weighted SPO (weight / weight_fn) is defined for pairs; "
           "list_loss takes no weight")
    lp = torch.zeros(2, 3, dtype=torch.float64)
    for kw in ({"weight": "gamma"}, {"weight_fn": lambda *a: a[0]}):
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
            SPOLoss(**kw).list_loss(lp)


def test_spo_pair_loss_is_scaled_softplus() -> None:
    """(1/alpha) softplus(-alpha (l_w - l_l)), the METHODS.md §1 pairwise SPO loss."""
    b = _pairs()
    d = b["policy_chosen_logps"] - b["policy_rejected_logps"]
    _close(get_loss("spo", alpha=0.25)(**b).losses, neg_log_sigmoid(0.25 * d) / 0.25)


# ------------------------------------------------------------------ SPPO


@pytest.mark.parametrize("kw,msg", [
    ({"beta": 0.0}, "sppo: beta must be positive (finite, > 0), got 0.0"),
    ({"iterations": 0}, "sppo: iterations must be >= 1 and samples_per_prompt >= 2"),
    ({"samples_per_prompt": 1}, "sppo: iterations must be >= 1 and samples_per_prompt >= 2"),
    ({"form": "ipo"}, "sppo: form must be one of sppo, sppo_single, got 'ipo'"),
    ({"preference": "human"}, "sppo: preference must be one of scorer, judge, got 'human'"),
])
def test_sppo_validation_messages(kw: dict, msg: str) -> None:
    """Each bad SPPO hyperparameter alone is refused, naming loss and field."""
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        get_loss("sppo", **kw)


def test_sppo_smallest_valid_loop() -> None:
    """One iteration with two samples per prompt is the smallest valid outer loop."""
    loss = get_loss("sppo", iterations=1, samples_per_prompt=2)
    assert (loss.iterations, loss.samples_per_prompt) == (1, 2)


def test_sppo_paper_form_needs_both_win_rates() -> None:
    """Form 'sppo' with only one of the two win rates is refused with the full message."""
    msg = ("sppo (form 'sppo') needs chosen_win_rate and rejected_win_rate, the responses' "
           "win rates against the current iterate; use form 'sppo_single' for plain "
           "preference pairs")
    b = _pairs()
    half = torch.full((6,), 0.5, dtype=torch.float64)
    for kw in ({}, {"chosen_win_rate": half}, {"rejected_win_rate": half}):
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
            get_loss("sppo")(**b, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_spo_weights_move_to_logprob_device() -> None:
    """A weight_fn that returns CPU weights for CUDA log-probs still works: the weights are
    moved to the log-probs' device (only observable with two devices)."""
    b = {k: v.cuda() for k, v in _pairs().items()}
    w = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    out = get_loss("spo", weight_fn=lambda *a: w)(**b)
    assert out.losses.device.type == "cuda"
    d = (b["policy_chosen_logps"] - b["policy_rejected_logps"]).cpu()
    _close(out.losses.cpu(), w * F.softplus(-d))
