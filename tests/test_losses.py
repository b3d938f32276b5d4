"""Preference losses against closed forms written out independently (METHODS.md §0-§6).

Tolerance: every tensor here is float64 and every expected value is a closed-form
expression of a handful of elementary operations, so the rounding error is a few ulp
(~1e-15 relative). 1e-6 is therefore far above numerical noise, yet far below any
real formula mistake (a missing 1/alpha, a swapped sign, a dropped reference term
all move values by O(0.1)). The theory targets are checked against LBFGS minimisers of
the exact expected loss in float64, to the same 1e-6 on log-probabilities.

TRL formulas transcribed below are from trl 1.16.0 (the dev pin): trl/trainer/dpo_trainer.py
(ipo, hinge, robust, sppo_hard), trl/experimental/cpo/cpo_trainer.py (`cpo_loss`, simpo),
trl/experimental/orpo/orpo_trainer.py (`odds_ratio_loss`), trl/trainer/kto_trainer.py (kto).
A slow test calls TRL's own CPO and ORPO functions.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from harness.errors import InputError
from trainers.losses import (
    LOSSES,
    CDPOLoss,
    DPOLoss,
    GDPOLoss,
    GIPOLoss,
    HingeLoss,
    IPOLoss,
    KTOLoss,
    ORPOLoss,
    RDPOLoss,
    SFTLoss,
    SimPOLoss,
    SPOLoss,
    SPPOLoss,
    TDPOLoss,
    gamma_weights,
    get_loss,
    spo_list_loss,
)

TOL = 1e-6
ALPHAS = [0.25, 0.5, 1.0, 2.0, 4.0]
BETAS = [0.05, 0.1, 0.5, 1.0, 3.0]
EPS = [0.0, 0.1, 0.3]


def _batch(seed: int = 0, n: int = 32) -> dict[str, torch.Tensor]:
    """Sequence log-probs (sums over tokens, so negative and spread over a few nats)."""
    g = torch.Generator().manual_seed(seed)

    def lp() -> torch.Tensor:
        return -torch.rand(n, generator=g, dtype=torch.float64) * 8.0

    return {"policy_chosen_logps": lp(), "policy_rejected_logps": lp(),
            "ref_chosen_logps": lp(), "ref_rejected_logps": lp()}


def _full(seed: int = 0, n: int = 32, token_kl: bool = False) -> dict[str, torch.Tensor]:
    """_batch plus completion lengths (int64, as the loop gives them) and TDPO's token KLs."""
    b = _batch(seed, n)
    g = torch.Generator().manual_seed(seed + 1000)
    b["chosen_lengths"] = torch.randint(1, 20, (n,), generator=g)
    b["rejected_lengths"] = torch.randint(1, 20, (n,), generator=g)
    if token_kl:
        b["chosen_token_kl"] = torch.rand(n, generator=g, dtype=torch.float64) * 3
        b["rejected_token_kl"] = torch.rand(n, generator=g, dtype=torch.float64) * 3
    return b


def _soft(seed: int = 1, n: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64)


def _swap(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    def other(k: str) -> str:
        for a, c in (("chosen", "rejected"), ("rejected", "chosen")):
            if a in k:
                return k.replace(a, c)
        return k

    return {other(k): v for k, v in b.items()}


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0.0, atol=TOL)


def _nls(z: torch.Tensor) -> torch.Tensor:
    """-log sigma(z) written without softplus."""
    return -torch.log(torch.sigmoid(z))


def _parts(b: dict[str, torch.Tensor]):
    pc, pr = b["policy_chosen_logps"], b["policy_rejected_logps"]
    rc, rr = b["ref_chosen_logps"], b["ref_rejected_logps"]
    lc = b["chosen_lengths"].double() if "chosen_lengths" in b else None
    lr = b["rejected_lengths"].double() if "rejected_lengths" in b else None
    return pc, pr, rc, rr, lc, lr


@pytest.mark.parametrize("alpha", ALPHAS)
def test_spo_losses_match_closed_form(alpha: float) -> None:
    b = _batch()
    out = get_loss("spo", alpha=alpha)(**b)
    pc, pr = b["policy_chosen_logps"], b["policy_rejected_logps"]
    # -(1/a) log sigma(a D), written with log1p/exp instead of softplus
    expected = torch.log1p(torch.exp(-alpha * (pc - pr))) / alpha
    assert out.losses.dtype == torch.float64
    _close(out.losses, expected)


def test_spo_alpha1_is_probability_space_bradley_terry() -> None:
    """METHODS §1.8 test 1: alpha=1 gives -log(pi_w / (pi_w + pi_l))."""
    b = _batch(seed=3)
    out = get_loss("spo", alpha=1.0)(**b)
    pi_w, pi_l = b["policy_chosen_logps"].exp(), b["policy_rejected_logps"].exp()
    _close(out.losses, -torch.log(pi_w / (pi_w + pi_l)))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_spo_general_alpha_is_power_preference_model(alpha: float) -> None:
    """-(1/a) log(pi_w^a / (pi_w^a + pi_l^a)), also in probability space."""
    b = _batch(seed=4)
    out = get_loss("spo", alpha=alpha)(**b)
    pw = b["policy_chosen_logps"].exp() ** alpha
    pl = b["policy_rejected_logps"].exp() ** alpha
    _close(out.losses, -torch.log(pw / (pw + pl)) / alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_spo_soft_labels(alpha: float) -> None:
    b, p = _batch(seed=5), _soft(seed=6)
    d = b["policy_chosen_logps"] - b["policy_rejected_logps"]
    out = get_loss("spo", alpha=alpha)(**b, soft_labels=p)
    expected = (p * F.softplus(-alpha * d) + (1 - p) * F.softplus(alpha * d)) / alpha
    _close(out.losses, expected)
    # p = 1 is the hard-label loss, p = 0 the loss of the swapped pair
    hard = get_loss("spo", alpha=alpha)(**b).losses
    _close(get_loss("spo", alpha=alpha)(**b, soft_labels=torch.ones_like(p)).losses, hard)
    swapped = get_loss("spo", alpha=alpha)(
        policy_chosen_logps=b["policy_rejected_logps"],
        policy_rejected_logps=b["policy_chosen_logps"]).losses
    _close(get_loss("spo", alpha=alpha)(**b, soft_labels=torch.zeros_like(p)).losses, swapped)


def test_spo_soft_label_half_is_symmetric_and_minimised_at_zero_margin() -> None:
    loss = get_loss("spo", alpha=2.0)
    d = torch.tensor([-1.5, 0.0, 1.5], dtype=torch.float64)
    out = loss(policy_chosen_logps=d, policy_rejected_logps=torch.zeros_like(d),
               soft_labels=torch.full_like(d, 0.5)).losses
    assert out[0].item() == pytest.approx(out[2].item(), abs=TOL)
    assert out[1].item() == pytest.approx(math.log(2) / 2.0, abs=TOL)
    assert out[1] < out[0]


def test_spo_ignores_reference_logps() -> None:
    b = _batch(seed=7)
    other = _batch(seed=8)
    loss = get_loss("spo", alpha=0.5)
    base = loss(**b).losses
    moved = loss(policy_chosen_logps=b["policy_chosen_logps"],
                 policy_rejected_logps=b["policy_rejected_logps"],
                 ref_chosen_logps=other["ref_chosen_logps"],
                 ref_rejected_logps=other["ref_rejected_logps"]).losses
    no_ref = loss(policy_chosen_logps=b["policy_chosen_logps"],
                  policy_rejected_logps=b["policy_rejected_logps"]).losses
    _close(moved, base)
    _close(no_ref, base)
    assert loss.requires_reference is False
    assert loss.regularizer is None


def test_spo_lambda_builds_kl_regularizer() -> None:
    loss = get_loss("spo", alpha=1.0, **{"lambda": 0.3}, reg_max_new_tokens=5)
    assert loss.regularizer is not None
    assert loss.regularizer.weight == pytest.approx(0.3)
    assert loss.regularizer.max_new_tokens == 5
    assert loss.requires_reference is False


@pytest.mark.parametrize("alpha", ALPHAS)
def test_spo_gradient_identity(alpha: float) -> None:
    """METHODS §1.4: d per/d pc = -sigmoid(-a (pc - pr)), d per/d pr = +sigmoid(-a (pc - pr))."""
    b = _batch(seed=9)
    pc = b["policy_chosen_logps"].clone().requires_grad_(True)
    pr = b["policy_rejected_logps"].clone().requires_grad_(True)
    out = get_loss("spo", alpha=alpha)(policy_chosen_logps=pc, policy_rejected_logps=pr)
    # each loss depends only on its own pair, so grad of the sum is the per-pair gradient
    gc, gr = torch.autograd.grad(out.losses.sum(), (pc, pr))
    s = torch.sigmoid(-alpha * (pc.detach() - pr.detach()))
    _close(gc, -s)
    _close(gr, s)
    # the 1/alpha prefactor keeps the gradient scale in [0, 1] for every alpha
    assert bool(((gc.abs() <= 1) & (gr.abs() <= 1)).all())


def test_spo_mean_loss_gradient_is_scaled_by_batch() -> None:
    """METHODS §1.8 test 3: autograd of the batch mean equals -sigmoid(-a D) / B."""
    b = _batch(seed=10, n=5)
    pc = b["policy_chosen_logps"].clone().requires_grad_(True)
    out = get_loss("spo", alpha=2.0)(policy_chosen_logps=pc,
                                     policy_rejected_logps=b["policy_rejected_logps"])
    (gc,) = torch.autograd.grad(out.losses.mean(), (pc,))
    d = pc.detach() - b["policy_rejected_logps"]
    _close(gc, -torch.sigmoid(-2.0 * d) / 5)


def test_spo_metrics() -> None:
    b = _batch(seed=11)
    a = 2.0
    out = get_loss("spo", alpha=a)(**b)
    pc, pr = b["policy_chosen_logps"], b["policy_rejected_logps"]
    m = out.metrics
    assert m["rewards/chosen"].item() == pytest.approx((a * pc).mean().item(), abs=TOL)
    assert m["rewards/margins"].item() == pytest.approx((a * (pc - pr)).mean().item(), abs=TOL)
    assert m["rewards/accuracies"].item() == pytest.approx((pc > pr).double().mean().item())
    assert m["logps/chosen"].item() == pytest.approx(pc.mean().item(), abs=TOL)


# ---------------------------------------------------------------------------- DPO


def _h(b: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((b["policy_chosen_logps"] - b["ref_chosen_logps"])
            - (b["policy_rejected_logps"] - b["ref_rejected_logps"]))


@pytest.mark.parametrize("beta", BETAS)
def test_dpo_losses_match_closed_form(beta: float) -> None:
    b = _batch(seed=12)
    out = get_loss("dpo", beta=beta)(**b)
    _close(out.losses, -torch.log(torch.sigmoid(beta * _h(b))))


@pytest.mark.parametrize("beta", BETAS)
def test_dpo_soft_labels(beta: float) -> None:
    b, p = _batch(seed=13), _soft(seed=14)
    h = _h(b)
    out = get_loss("dpo", beta=beta)(**b, soft_labels=p)
    expected = -(p * torch.log(torch.sigmoid(beta * h))
                 + (1 - p) * torch.log(torch.sigmoid(-beta * h)))
    _close(out.losses, expected)
    hard = get_loss("dpo", beta=beta)(**b).losses
    _close(get_loss("dpo", beta=beta)(**b, soft_labels=torch.ones_like(p)).losses, hard)


def test_dpo_depends_on_reference() -> None:
    b = _batch(seed=15)
    shifted = dict(b, ref_chosen_logps=b["ref_chosen_logps"] + 1.0)
    loss = get_loss("dpo", beta=0.5)
    assert not torch.allclose(loss(**b).losses, loss(**shifted).losses)
    assert loss.requires_reference is True


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_dpo_metrics(beta: float) -> None:
    b = _batch(seed=16)
    m = get_loss("dpo", beta=beta)(**b).metrics
    chosen = beta * (b["policy_chosen_logps"] - b["ref_chosen_logps"])
    rejected = beta * (b["policy_rejected_logps"] - b["ref_rejected_logps"])
    assert m["rewards/chosen"].item() == pytest.approx(chosen.mean().item(), abs=TOL)
    assert m["rewards/rejected"].item() == pytest.approx(rejected.mean().item(), abs=TOL)
    assert m["rewards/margins"].item() == pytest.approx((chosen - rejected).mean().item(),
                                                         abs=TOL)
    acc = (chosen > rejected).double().mean().item()
    assert 0.0 < acc < 1.0  # the random batch has both signs, so the check can fail
    assert m["rewards/accuracies"].item() == pytest.approx(acc)
    assert not any(v.requires_grad for v in m.values())


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": -1.0}, {"lambda": -0.1},
                                    {"kl_estimator": "bogus"}, {"reg_max_new_tokens": 0}])
def test_spo_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        get_loss("spo", **kwargs)


@pytest.mark.parametrize("beta", [0.0, -0.5])
def test_dpo_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        get_loss("dpo", beta=beta)


def test_unknown_hyperparameters_raise_type_error_naming_them() -> None:
    with pytest.raises(TypeError, match="betta"):
        get_loss("spo", alpha=1.0, betta=0.1)
    with pytest.raises(TypeError, match="label_smoothing"):
        get_loss("dpo", beta=0.1, label_smoothing=0.1)


@pytest.mark.parametrize("name,kw", [("spo", {"alpha": float("nan")}),
                                     ("dpo", {"beta": float("nan")})])
def test_nan_hyperparameters_rejected(name: str, kw: dict) -> None:
    with pytest.raises(ValueError):
        get_loss(name, **kw)


def test_spo_weight_fn_not_silently_ignored() -> None:
    """A weight_fn multiplies each pair's SPO loss by its (detached) weight, called with the
    detached log-probs and the lengths, as METHODS.md §1.2's weighted SPO does."""
    b = _full(seed=17)
    seen = {}

    def weight_fn(pc, pr, lc, lr):
        seen.update(pc=pc, lc=lc)
        return torch.arange(32, dtype=torch.float64) / 8.0  # 0 switches a pair off

    plain = get_loss("spo", alpha=1.0)(**b)
    weighted = get_loss("spo", alpha=1.0, weight_fn=weight_fn)(**b)
    w = torch.arange(32, dtype=torch.float64) / 8.0
    torch.testing.assert_close(weighted.losses, w * plain.losses, rtol=1e-12, atol=0)
    assert float(weighted.metrics["weights/mean"]) == pytest.approx(float(w.mean()), abs=1e-12)
    assert torch.equal(seen["pc"], b["policy_chosen_logps"]) and not seen["pc"].requires_grad
    assert torch.equal(seen["lc"], b["chosen_lengths"])


@pytest.mark.parametrize("name,kw", [("spo", {"alpha": 1.0}), ("dpo", {"beta": 0.1})])
@pytest.mark.parametrize("bad", [-0.01, 1.01])
def test_soft_label_outside_unit_interval(name: str, kw: dict, bad: float) -> None:
    b = _batch(seed=18, n=3)
    p = torch.tensor([0.5, bad, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        get_loss(name, **kw)(**b, soft_labels=p)


def test_dpo_without_reference_raises() -> None:
    b = _batch(seed=19)
    loss = get_loss("dpo", beta=0.1)
    with pytest.raises(ValueError, match="ref"):
        loss(policy_chosen_logps=b["policy_chosen_logps"],
             policy_rejected_logps=b["policy_rejected_logps"])
    with pytest.raises(ValueError, match="ref"):
        loss(policy_chosen_logps=b["policy_chosen_logps"],
             policy_rejected_logps=b["policy_rejected_logps"],
             ref_chosen_logps=b["ref_chosen_logps"])


def test_unknown_method_name() -> None:
    with pytest.raises(InputError, match="Did you mean 'spo'") as exc:
        get_loss("sop", alpha=1.0)
    assert "dpo" in str(exc.value) and "method" in str(exc.value)
    assert {"spo", "dpo"} <= set(LOSSES.names())


def test_get_loss_types() -> None:
    assert isinstance(get_loss("spo"), SPOLoss) and get_loss("spo").alpha == 1.0
    assert isinstance(get_loss("dpo"), DPOLoss) and get_loss("dpo").beta == 0.1


# ------------------------------------------------------------------- SPO: weights, lists, KL


@pytest.mark.parametrize("estimator", ["exact", "k1", "k3", "reference"])
def test_spo_kl_estimators_are_accepted_and_stored(estimator: str) -> None:
    loss = get_loss("spo", **{"lambda": 0.2}, kl_estimator=estimator, reg_prompts_per_step=3,
                    reg_samples_per_prompt=2)
    reg = loss.regularizer
    assert (reg.estimator, reg.prompts_per_step, reg.samples_per_prompt) == (estimator, 3, 2)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_spo_gamma_weight_matches_placeholder_formula(gamma: float) -> None:
    b = _full(seed=30)
    pc, pr, _, _, lc, lr = _parts(b)
    out = get_loss("spo", alpha=2.0, weight="gamma", gamma=gamma)(**b)
    m = (pc / lc + pr / lr) / 2
    mu = torch.exp(gamma * (m - m.mean()))
    _close(out.losses, mu * torch.log1p(torch.exp(-2.0 * (pc - pr))) / 2.0)
    assert not torch.allclose(out.losses, get_loss("spo", alpha=2.0)(**b).losses)
    assert out.metrics["weights/mean"].item() == pytest.approx(mu.mean().item(), abs=TOL)


def test_spo_gamma_zero_weight_is_unweighted() -> None:
    b, p = _full(seed=31), _soft(seed=32)
    weighted = get_loss("spo", alpha=0.5, weight="gamma", gamma=0.0)(**b, soft_labels=p)
    _close(weighted.losses, get_loss("spo", alpha=0.5)(**b, soft_labels=p).losses)


def test_spo_weights_are_detached() -> None:
    """grad of mu * loss is mu * grad(loss): mu is a constant for autograd."""
    b = _full(seed=33)
    pc = b["policy_chosen_logps"].clone().requires_grad_(True)
    pr = b["policy_rejected_logps"].clone().requires_grad_(True)
    lc, lr = b["chosen_lengths"].double(), b["rejected_lengths"].double()
    out = get_loss("spo", alpha=1.0, weight="gamma", gamma=2.0)(
        policy_chosen_logps=pc, policy_rejected_logps=pr, chosen_lengths=b["chosen_lengths"],
        rejected_lengths=b["rejected_lengths"])
    gc, gr = torch.autograd.grad(out.losses.sum(), (pc, pr))
    m = (pc.detach() / lc + pr.detach() / lr) / 2
    mu = torch.exp(2.0 * (m - m.mean()))
    s = torch.sigmoid(-(pc.detach() - pr.detach()))
    _close(gc, -mu * s)
    _close(gr, mu * s)


def test_spo_custom_weight_fn_gets_pairs_and_lengths_under_no_grad() -> None:
    b = _full(seed=34)
    seen = {}

    def weight_fn(pc, pr, lc, lr):
        seen.update(grad=torch.is_grad_enabled(), lc=lc)
        return torch.sigmoid(pc - pr)

    pc = b["policy_chosen_logps"].clone().requires_grad_(True)
    out = get_loss("spo", alpha=1.0, weight_fn=weight_fn)(**dict(b, policy_chosen_logps=pc))
    pr = b["policy_rejected_logps"]
    mu = torch.sigmoid(pc.detach() - pr)
    _close(out.losses, mu * F.softplus(-(pc.detach() - pr)))
    assert seen["grad"] is False and seen["lc"] is not None
    (g,) = torch.autograd.grad(out.losses.sum(), (pc,))
    _close(g, -mu * torch.sigmoid(-(pc.detach() - pr)))


@pytest.mark.parametrize("kw,match", [
    ({"weight": "entropy"}, "weight"), ({"weight": "gamma", "gamma": -1.0}, "gamma"),
    ({"weight": "gamma", "weight_fn": lambda *a: a[0]}, "not both"), ({"weight_fn": 3}, "callable"),
])
def test_spo_bad_weight_options(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_loss("spo", **kw)


@pytest.mark.parametrize("weights", [torch.ones(5), -torch.ones(32), torch.full((32,), math.nan)])
def test_spo_bad_weight_fn_output(weights: torch.Tensor) -> None:
    loss = get_loss("spo", weight_fn=lambda *a: weights)
    with pytest.raises(ValueError, match="weights"):
        loss(**_batch(seed=35))


def test_spo_gamma_weight_needs_lengths() -> None:
    b = _batch(seed=36)
    with pytest.raises(ValueError, match="lengths"):
        get_loss("spo", weight="gamma")(**b)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("ranked", [True, False])
def test_spo_list_loss_n2_equals_pairwise(alpha: float, ranked: bool) -> None:
    b = _batch(seed=37)
    loss = get_loss("spo", alpha=alpha)
    logps = torch.stack([b["policy_chosen_logps"], b["policy_rejected_logps"]], 1)
    out = loss.list_loss(logps, ranked=ranked)
    _close(out.losses, loss(**b).losses)
    _close(spo_list_loss(logps, alpha, ranked), out.losses)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_spo_list_loss_is_plackett_luce_in_probability_space(alpha: float) -> None:
    g = torch.Generator().manual_seed(38)
    logps = -torch.rand(16, 5, generator=g, dtype=torch.float64) * 6
    loss = get_loss("spo", alpha=alpha)
    w = logps.exp() ** alpha
    ranked = sum(-torch.log(w[:, k] / w[:, k:].sum(1)) for k in range(4)) / alpha
    _close(loss.list_loss(logps, ranked=True).losses, ranked)
    _close(loss.list_loss(logps, ranked=False).losses, -torch.log(w[:, 0] / w.sum(1)) / alpha)
    m = loss.list_loss(logps).metrics
    assert m["rewards/chosen"].item() == pytest.approx((alpha * logps[:, 0]).mean().item())
    acc = (logps.argmax(1) == 0).double().mean().item()
    assert m["rewards/accuracies"].item() == pytest.approx(acc)


def test_spo_list_loss_errors() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        get_loss("spo").list_loss(torch.zeros(4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="pairs"):
        get_loss("spo", weight="gamma").list_loss(torch.zeros(4, 3, dtype=torch.float64))


# ------------------------------------------------------------------- closed forms, new losses


def _expected_losses(name: str, kw: dict, b: dict, p: torch.Tensor | None = None):
    """Each loss's formula written out independently (TRL transcriptions where TRL has it)."""
    pc, pr, rc, rr, lc, lr = _parts(b)
    lw, ll = pc - rc, pr - rr
    h = lw - ll
    beta = kw.get("beta")
    if name == "ipo":  # TRL dpo_trainer: ipo_delta = chosen/|y_w| - rejected/|y_l|
        return (lw / lc - ll / lr - 1 / (2 * beta)) ** 2
    if name == "hinge":
        return torch.clamp(1 - beta * h, min=0)
    if name == "cdpo":
        eps = kw["label_smoothing"]
        return -(1 - eps) * torch.log(torch.sigmoid(beta * h)) - eps * torch.log(
            torch.sigmoid(-beta * h))
    if name == "rdpo":  # TRL robust: (clean - flipped) / (1 - 2 eps)
        eps = kw["label_smoothing"]
        clean = -(1 - eps) * F.logsigmoid(beta * h)
        flipped = -eps * F.logsigmoid(-beta * h)
        return (clean - flipped) / (1 - 2 * eps)
    if name == "gdpo":
        return _nls(beta * (2 * p - 1) * h)
    if name == "gipo":
        return ((2 * p - 1) * (lw / lc - ll / lr) - 1 / (2 * beta)) ** 2
    if name == "simpo":  # TRL cpo_loss, loss_type="simpo", on length-averaged logps
        gamma = kw["gamma"]
        logits = (pc / lc - pr / lr) - gamma / beta
        return -F.logsigmoid(beta * logits)
    if name == "orpo":  # TRL odds_ratio_loss on length-averaged logps, plus per-pair NLL
        mw, ml = pc / lc, pr / lr
        log_odds = (mw - ml) - (torch.log1p(-torch.exp(mw)) - torch.log1p(-torch.exp(ml)))
        return -mw - kw["lambda"] * F.logsigmoid(log_odds)
    if name == "sft":
        return -pc / lc
    if name == "sppo":
        q = 1.0 if p is None else p
        return ((lw - (q - 0.5) / beta) ** 2 + (ll + (q - 0.5) / beta) ** 2) / 2
    if name == "tdpo":
        dw, dl = b["chosen_token_kl"], b["rejected_token_kl"]
        a = kw["alpha"] if kw["tdpo2"] else 1.0
        return _nls(beta * (h - a * (dl - dw)))
    raise AssertionError(name)


CASES = [(n, {"beta": be}) for n in ("ipo", "hinge", "gdpo", "gipo") for be in BETAS]
CASES += [("sppo", {"beta": be, "form": "sppo_single"}) for be in BETAS]
CASES += [(n, {"beta": be, "label_smoothing": e}) for n in ("cdpo", "rdpo")
          for be in (0.1, 1.0) for e in EPS]
CASES += [("simpo", {"beta": be, "gamma": g}) for be in (0.5, 2.0, 2.5) for g in (0.0, 0.5, 1.0)]
CASES += [("orpo", {"lambda": lam}) for lam in (0.0, 0.1, 1.0)] + [("sft", {})]
CASES += [("tdpo", {"beta": be, "alpha": a, "tdpo2": t}) for be in (0.1, 1.0)
          for a in (0.5, 2.0) for t in (True, False)]
DIRECT = {"gdpo", "gipo", "sppo"}  # the soft label enters the formula itself


@pytest.mark.parametrize("name,kw", CASES)
def test_losses_match_closed_form(name: str, kw: dict) -> None:
    b = _full(seed=40, token_kl=name == "tdpo")
    out = get_loss(name, **kw)(**b)
    assert out.losses.dtype == torch.float64
    _close(out.losses, _expected_losses(name, kw, b, torch.ones(32, dtype=torch.float64)))
    if name in DIRECT:
        p = _soft(seed=41)
        _close(get_loss(name, **kw)(**b, soft_labels=p).losses,
               _expected_losses(name, kw, b, p))


@pytest.mark.parametrize("name,kw", [c for c in CASES if c[0] not in DIRECT])
def test_soft_labels_give_expected_loss(name: str, kw: dict) -> None:
    """p loss(chosen, rejected) + (1-p) loss(rejected, chosen), the swap done by hand."""
    b, p = _full(seed=42, token_kl=name == "tdpo"), _soft(seed=43)
    loss = get_loss(name, **kw)
    expected = p * loss(**b).losses + (1 - p) * loss(**_swap(b)).losses
    _close(loss(**b, soft_labels=p).losses, expected)
    _close(loss(**b, soft_labels=torch.ones_like(p)).losses, loss(**b).losses)


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_direct_soft_label_losses_are_swap_symmetric(name: str) -> None:
    b, p = _full(seed=44), _soft(seed=45)
    loss = get_loss(name, beta=0.5, **({"form": "sppo_single"} if name == "sppo" else {}))
    _close(loss(**b, soft_labels=p).losses, loss(**_swap(b), soft_labels=1 - p).losses)


# ------------------------------------------------------------------- reductions


@pytest.mark.parametrize("beta", BETAS)
def test_hard_label_reductions(beta: float) -> None:
    pairs = _full(seed=46)
    b = _full(seed=46, token_kl=True)
    ones = torch.ones(32, dtype=torch.float64)
    dpo = get_loss("dpo", beta=beta)(**pairs).losses
    _close(get_loss("gdpo", beta=beta)(**pairs).losses, dpo)
    _close(get_loss("gdpo", beta=beta)(**pairs, soft_labels=ones).losses, dpo)
    _close(get_loss("cdpo", beta=beta, label_smoothing=0.0)(**pairs).losses, dpo)
    _close(get_loss("rdpo", beta=beta, label_smoothing=0.0)(**pairs).losses, dpo)
    ipo = get_loss("ipo", beta=beta)(**pairs).losses
    _close(get_loss("gipo", beta=beta)(**pairs).losses, ipo)
    _close(get_loss("gipo", beta=beta)(**pairs, soft_labels=ones).losses, ipo)
    # TDPO with equal token KLs on both sides is DPO (values; TDPO2's gradient differs)
    same = dict(b, rejected_token_kl=b["chosen_token_kl"])
    for tdpo2 in (True, False):
        _close(get_loss("tdpo", beta=beta, tdpo2=tdpo2)(**same).losses, dpo)


@pytest.mark.parametrize("beta", BETAS)
def test_sppo_hard_is_half_trl_sppo_hard(beta: float) -> None:
    b = _batch(seed=47)
    lw = b["policy_chosen_logps"] - b["ref_chosen_logps"]
    ll = b["policy_rejected_logps"] - b["ref_rejected_logps"]
    trl_sppo_hard = (lw - 0.5 / beta) ** 2 + (ll + 0.5 / beta) ** 2
    _close(get_loss("sppo", beta=beta, form="sppo_single")(**b).losses, trl_sppo_hard / 2)


@pytest.mark.parametrize("beta", BETAS)
def test_sppo_paper_form_matches_the_sppo_code(beta: float) -> None:
    """uclaml/SPPO loss_type="sppo": per-response win rates against pi_t, not p."""
    b, pw, pl = _batch(seed=46), _soft(seed=44), _soft(seed=45)
    lw = b["policy_chosen_logps"] - b["ref_chosen_logps"]
    ll = b["policy_rejected_logps"] - b["ref_rejected_logps"]
    expected = ((lw - (1 / beta) * (pw - 0.5)) ** 2 + (ll - (1 / beta) * (pl - 0.5)) ** 2) / 2
    loss = get_loss("sppo", beta=beta)
    _close(loss(**b, chosen_win_rate=pw, rejected_win_rate=pl).losses, expected)
    # the soft label does not enter this form; swapping the pair with its win rates is a no-op
    _close(loss(**b, chosen_win_rate=pw, rejected_win_rate=pl, soft_labels=pl).losses, expected)
    swapped = {"policy_chosen_logps": b["policy_rejected_logps"],
               "policy_rejected_logps": b["policy_chosen_logps"],
               "ref_chosen_logps": b["ref_rejected_logps"],
               "ref_rejected_logps": b["ref_chosen_logps"]}
    _close(loss(**swapped, chosen_win_rate=pl, rejected_win_rate=pw).losses, expected)
    with pytest.raises(ValueError, match="chosen_win_rate"):
        loss(**b)


def test_orpo_without_odds_ratio_is_sft() -> None:
    b = _full(seed=48)
    _close(get_loss("orpo", **{"lambda": 0.0})(**b).losses, get_loss("sft")(**b).losses)


def test_simpo_one_token_without_margin_is_spo() -> None:
    b = _batch(seed=49)
    ones = torch.ones(32, dtype=torch.int64)
    simpo = get_loss("simpo", beta=2.0, gamma=0.0)(**b, chosen_lengths=ones, rejected_lengths=ones)
    _close(simpo.losses, 2.0 * get_loss("spo", alpha=2.0)(**b).losses)


def test_robust_is_an_alias_of_rdpo() -> None:
    """`robust` (TRL's name) is the very class registered as `rdpo`, so no other test repeats
    its cases under the alias."""
    assert isinstance(get_loss("robust"), RDPOLoss) and get_loss("robust").label_smoothing == 0.1
    assert LOSSES.get("robust") is LOSSES.get("rdpo")


# ------------------------------------------------------------------- gradients


def _grad(name: str, kw: dict, b: dict, wrt: tuple[str, ...], p=None):
    leaves = {k: b[k].clone().requires_grad_(True) for k in wrt}
    out = get_loss(name, **kw)(**dict(b, **leaves), soft_labels=p)
    return torch.autograd.grad(out.losses.sum(), tuple(leaves.values()), allow_unused=True)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_gradient_identities(beta: float) -> None:
    b, p = _full(seed=50), _soft(seed=51)
    pairs = b
    pc, pr, rc, rr, lc, lr = _parts(b)
    h = (pc - rc) - (pr - rr)
    (g,) = _grad("dpo", {"beta": beta}, pairs, ("policy_chosen_logps",))
    _close(g, -beta * torch.sigmoid(-beta * h))
    # GDPO: the (2p - 1) factor scales the gradient and vanishes at p = 1/2 (METHODS §3)
    (g,) = _grad("gdpo", {"beta": beta}, pairs, ("policy_chosen_logps",), p)
    _close(g, -beta * (2 * p - 1) * torch.sigmoid(-beta * (2 * p - 1) * h))
    (g,) = _grad("gdpo", {"beta": beta}, pairs, ("policy_chosen_logps",), torch.full_like(p, .5))
    _close(g, torch.zeros_like(p))
    hbar = (pc - rc) / lc - (pr - rr) / lr
    (g,) = _grad("ipo", {"beta": beta}, pairs, ("policy_chosen_logps",))
    _close(g, 2 * (hbar - 1 / (2 * beta)) / lc)
    z = beta * (pc / lc - pr / lr) - 0.5
    gc, gr = _grad("simpo", {"beta": beta}, pairs, ("policy_chosen_logps", "policy_rejected_logps"))
    _close(gc, -beta / lc * torch.sigmoid(-z))
    _close(gr, beta / lr * torch.sigmoid(-z))
    (g,) = _grad("sppo", {"beta": beta, "form": "sppo_single"}, pairs, ("policy_chosen_logps",), p)
    _close(g, (pc - rc) - (p - 0.5) / beta)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_tdpo_stop_gradient(alpha: float) -> None:
    b = _full(seed=52, token_kl=True)
    pc, pr, rc, rr, _, _ = _parts(b)
    dw, dl = b["chosen_token_kl"], b["rejected_token_kl"]
    h = (pc - rc) - (pr - rr)
    kls = ("chosen_token_kl", "rejected_token_kl")
    gw, gl = _grad("tdpo", {"beta": 0.5, "alpha": alpha, "tdpo2": True}, b, kls)
    s = torch.sigmoid(-0.5 * (h - alpha * (dl - dw)))
    assert gw is None or bool((gw == 0).all())  # sg(D_w)
    _close(gl, 0.5 * alpha * s)
    gw, gl = _grad("tdpo", {"beta": 0.5, "alpha": alpha, "tdpo2": False}, b, kls)
    s = torch.sigmoid(-0.5 * (h - (dl - dw)))
    _close(gw, -0.5 * s)
    _close(gl, 0.5 * s)


# ------------------------------------------------------------------- KTO


def _kto_inputs(seed: int = 60, n: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"policy_logps": -torch.rand(n, generator=g, dtype=torch.float64) * 8,
            "ref_logps": -torch.rand(n, generator=g, dtype=torch.float64) * 8,
            "desirable": torch.rand(n, generator=g) < 0.6,
            "kl_logps_policy": -torch.rand(n, generator=g, dtype=torch.float64) * 8,
            "kl_logps_ref": -torch.rand(n, generator=g, dtype=torch.float64) * 8}


def _trl_kto(x: dict, beta: float, wd: float, wu: float) -> torch.Tensor:
    """TRL kto_trainer (loss_type="kto"), scattered back to input order."""
    kl = (x["kl_logps_policy"] - x["kl_logps_ref"]).mean().detach().clamp(min=0)
    d = x["desirable"]
    chosen = 1 - F.sigmoid(beta * ((x["policy_logps"] - x["ref_logps"])[d] - kl))
    rejected = 1 - F.sigmoid(beta * (kl - (x["policy_logps"] - x["ref_logps"])[~d]))
    out = torch.empty_like(x["policy_logps"])
    out[d], out[~d] = wd * chosen, wu * rejected
    return out


@pytest.mark.parametrize("beta,wd,wu", [(0.1, 1.0, 1.0), (0.5, 1.0, 1.33), (2.0, 0.5, 2.0)])
@pytest.mark.parametrize("shift", [0.0, 3.0])  # shift > 0 makes the reference point z0 > 0
def test_kto_matches_trl(beta: float, wd: float, wu: float, shift: float) -> None:
    x = _kto_inputs()
    x["kl_logps_policy"] = x["kl_logps_policy"] + shift
    loss = get_loss("kto", beta=beta, desirable_weight=wd, undesirable_weight=wu)
    out = loss(**x)
    _close(out.losses, _trl_kto(x, beta, wd, wu))
    z0 = (x["kl_logps_policy"] - x["kl_logps_ref"]).mean().clamp(min=0)
    assert out.metrics["kl"].item() == pytest.approx(z0.item(), abs=TOL)
    r = beta * (x["policy_logps"] - x["ref_logps"])
    d = x["desirable"]
    assert out.metrics["rewards/chosen"].item() == pytest.approx(r[d].mean().item(), abs=TOL)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(r[~d].mean().item(), abs=TOL)


def test_kto_reference_point_is_detached_and_unpaired_interface() -> None:
    x = _kto_inputs(seed=61)
    kp = x["kl_logps_policy"].clone().requires_grad_(True)
    pl = x["policy_logps"].clone().requires_grad_(True)
    out = get_loss("kto")(**dict(x, kl_logps_policy=kp + 3.0, policy_logps=pl))
    gk, gp = torch.autograd.grad(out.losses.sum(), (kp, pl), allow_unused=True)
    assert gk is None and bool((gp != 0).all())
    loss = get_loss("kto")
    assert loss.paired is False and loss.requires_reference is True
    with pytest.raises(TypeError, match="unpaired"):
        loss(**_batch())
    with pytest.raises(ValueError, match="kl_logps_policy"):
        loss(**{k: v for k, v in x.items() if k != "kl_logps_policy"})
    with pytest.raises(ValueError, match="bool"):
        loss(**dict(x, desirable=x["desirable"].double()))
    only_good = dict(x, desirable=torch.ones_like(x["desirable"]))
    assert math.isnan(loss(**only_good).metrics["rewards/rejected"].item())


# ------------------------------------------------------------------- metrics and flags


@pytest.mark.parametrize("name,kw,reward", [
    ("ipo", {"beta": 0.3}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("hinge", {"beta": 0.3}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("cdpo", {"beta": 0.3}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("rdpo", {"beta": 0.3}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("gdpo", {"beta": 0.3}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("gipo", {"beta": 0.3}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("sppo", {"beta": 0.3, "form": "sppo_single"}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("tdpo", {"beta": 0.3}, lambda pc, rc, lc: 0.3 * (pc - rc)),
    ("simpo", {"beta": 2.5}, lambda pc, rc, lc: 2.5 * pc / lc),
    ("orpo", {"lambda": 0.2}, lambda pc, rc, lc: 0.2 * pc / lc),
    ("sft", {}, lambda pc, rc, lc: pc / lc),
])
def test_metrics(name: str, kw: dict, reward) -> None:
    b = _full(seed=70, token_kl=name == "tdpo")
    pc, pr, rc, rr, lc, lr = _parts(b)
    m = get_loss(name, **kw)(**b).metrics
    chosen, rejected = reward(pc, rc, lc), reward(pr, rr, lr)
    assert m["rewards/chosen"].item() == pytest.approx(chosen.mean().item(), abs=TOL)
    assert m["rewards/rejected"].item() == pytest.approx(rejected.mean().item(), abs=TOL)
    assert m["rewards/margins"].item() == pytest.approx((chosen - rejected).mean().item(), abs=TOL)
    acc = (chosen > rejected).double().mean().item()
    assert m["rewards/accuracies"].item() == pytest.approx(acc)
    assert m["logps/chosen"].item() == pytest.approx(pc.mean().item(), abs=TOL)
    assert not any(v.requires_grad for v in m.values())
    if name == "tdpo":
        assert m["kl/rejected"].item() == pytest.approx(b["rejected_token_kl"].mean().item())
    if name == "orpo":
        mw, ml = pc / lc, pr / lr
        lo = (mw - ml) - (torch.log1p(-mw.exp()) - torch.log1p(-ml.exp()))
        assert m["log_odds_chosen"].item() == pytest.approx(lo.mean().item(), abs=TOL)
        assert m["log_odds_ratio"].item() == pytest.approx(F.logsigmoid(lo).mean().item(),
                                                           abs=TOL)
        assert m["nll_loss"].item() == pytest.approx((-mw).mean().item(), abs=TOL)


FLAGS = {  # name: (requires_reference, requires_lengths, requires_token_kl, paired, class)
    "spo": (False, False, False, True, SPOLoss), "dpo": (True, False, False, True, DPOLoss),
    "ipo": (True, True, False, True, IPOLoss), "hinge": (True, False, False, True, HingeLoss),
    "cdpo": (True, False, False, True, CDPOLoss), "rdpo": (True, False, False, True, RDPOLoss),
    "gdpo": (True, False, False, True, GDPOLoss),
    "gipo": (True, True, False, True, GIPOLoss), "simpo": (False, True, False, True, SimPOLoss),
    "orpo": (False, True, False, True, ORPOLoss), "sft": (False, True, False, True, SFTLoss),
    "sppo": (True, False, False, True, SPPOLoss), "tdpo": (True, False, True, True, TDPOLoss),
    "kto": (True, False, False, False, KTOLoss),
}
DEFAULTS = {  # METHODS.md defaults (and the documented choices for cdpo/rdpo/tdpo)
    "spo": {"alpha": 1.0, "kl_weight": 0.0, "kl_estimator": "exact", "weight": "none",
            "gamma": 1.0},
    "dpo": {"beta": 0.1}, "ipo": {"beta": 0.1}, "hinge": {"beta": 0.1},
    "cdpo": {"beta": 0.1, "label_smoothing": 0.1}, "rdpo": {"beta": 0.1, "label_smoothing": 0.1},
    "gdpo": {"beta": 0.1}, "gipo": {"beta": 0.1}, "simpo": {"beta": 2.0, "gamma": 0.5},
    "orpo": {"lam": 0.1}, "sppo": {"beta": 1e-3, "form": "sppo"}, "tdpo": {"beta": 0.1, "alpha": 0.5, "tdpo2": True},
    "kto": {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0},
}


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_flags_and_defaults(name: str) -> None:
    loss = get_loss(name)
    ref, lengths, token_kl, paired, cls = FLAGS[name]
    assert isinstance(loss, cls)
    assert (loss.requires_reference, loss.requires_lengths, loss.requires_token_kl,
            loss.paired) == (ref, lengths, token_kl, paired)
    for k, v in DEFAULTS.get(name, {}).items():
        assert getattr(loss, k) == v, k
    assert set(FLAGS) <= set(LOSSES.names())


def test_missing_inputs_are_named() -> None:
    b = _full(seed=71, token_kl=True)
    no_ref = {k: v for k, v in b.items() if not k.startswith("ref_") and "token_kl" not in k}
    for name in ("ipo", "hinge", "cdpo", "rdpo", "gdpo", "gipo", "sppo", "tdpo"):
        with pytest.raises(ValueError, match="ref_chosen_logps"):
            get_loss(name)(**no_ref)
    no_len = {k: v for k, v in b.items() if "lengths" not in k and "token_kl" not in k}
    for name in ("ipo", "gipo", "simpo", "orpo", "sft"):
        with pytest.raises(ValueError, match="lengths"):
            get_loss(name)(**no_len)
    with pytest.raises(ValueError, match="positive"):
        get_loss("simpo")(**dict(no_len, chosen_lengths=torch.zeros(32), rejected_lengths=
                                 torch.ones(32)))
    with pytest.raises(ValueError, match="chosen_token_kl"):
        get_loss("tdpo")(**dict(b, rejected_token_kl=None))
    with pytest.raises(ValueError, match="chosen_token_kl"):
        get_loss("tdpo")(**{k: v for k, v in b.items() if "token_kl" not in k})
    with pytest.raises(TypeError, match="chosen_token_kl"):
        get_loss("dpo")(**b)  # extra inputs are only for the losses that use them


# ------------------------------------------------------------------- validation


def _public(field_name: str) -> str:
    return {"kl_weight": "lambda", "lam": "lambda"}.get(field_name, field_name)


def _float_hyperparams() -> list[tuple[str, str]]:
    out = []
    for name in sorted(FLAGS):
        cls = LOSSES.get(name).loss_class
        out += [(name, _public(f.name)) for f in dataclasses.fields(cls)
                if f.init and f.type == "float"]
    return out


@pytest.mark.parametrize("name,key", _float_hyperparams())
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, "0.1", True])
def test_bad_float_hyperparameters(name: str, key: str, bad) -> None:
    with pytest.raises(ValueError, match=key):
        get_loss(name, **{key: bad})


@pytest.mark.parametrize("name,kw", [
    ("ipo", {"beta": 0.0}), ("cdpo", {"label_smoothing": 0.5}), ("rdpo", {"label_smoothing": 0.5}),
    ("rdpo", {"label_smoothing": 0.7}), ("sppo", {"beta": 0.0}), ("simpo", {"beta": 0.0}),
    ("tdpo", {"tdpo2": "yes"}), ("tdpo", {"tdpo2": 1}), ("spo", {"reg_prompts_per_step": 1.5}),
])
def test_bad_values(name: str, kw: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        get_loss(name, **kw)


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_every_loss_names_unknown_hyperparameters(name: str) -> None:
    with pytest.raises(TypeError, match="betta") as exc:
        get_loss(name, betta=1.0)
    assert "known" in str(exc.value)


def test_int_hyperparameters_from_yaml_are_floats() -> None:
    assert get_loss("simpo", beta=2, gamma=0).beta == 2.0
    assert isinstance(get_loss("ipo", beta=1).beta, float)


# ------------------------------------------------------------------- optimum


def _rewards_and_ref(k: int = 6, seed: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(k, generator=g, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), -1)
    return r, ref


@pytest.mark.parametrize("alpha", ALPHAS)
def test_spo_optimal_logprobs(alpha: float) -> None:
    r, ref = _rewards_and_ref()
    loss = get_loss("spo", alpha=alpha)
    out = loss.optimal_logprobs(r, ref)
    _close(out, torch.log_softmax(r / alpha, -1))
    _close(loss.optimal_logprobs(r, torch.zeros_like(ref)), out)  # independent of pi_ref
    assert out.exp().sum().item() == pytest.approx(1.0, abs=TOL)


def test_spo_with_regularizer_claims_no_optimum() -> None:
    r, ref = _rewards_and_ref()
    assert get_loss("spo", alpha=1.0, **{"lambda": 0.1}).optimal_logprobs(r, ref) is None


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_dpo_optimal_logprobs(beta: float) -> None:
    r, ref = _rewards_and_ref()
    out = get_loss("dpo", beta=beta).optimal_logprobs(r, ref)
    expected = ref + r / beta
    _close(out, expected - torch.logsumexp(expected, -1))


def _all_pairs(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.triu_indices(k, k, offset=1)
    return i, j


def _fit_bandit(loss, r: torch.Tensor, ref: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """Minimise the exact expected loss over all pairs, soft labels sigmoid(r_i - r_j).

    One-token answers: lengths 1, and (for TDPO) both sides share the only prefix, so
    D_w = D_l = KL(pi_ref || pi_theta) over the K answers.
    """
    i, j = _all_pairs(len(r))
    p = torch.sigmoid(r[i] - r[j])
    ones = torch.ones(len(i), dtype=torch.int64)
    theta = torch.zeros(len(r), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(theta, -1)
        extra = {}
        if loss.requires_token_kl:
            d = (ref.exp() * (ref - logp)).sum().expand(len(i))
            extra = {"chosen_token_kl": d, "rejected_token_kl": d}
        out = loss(policy_chosen_logps=logp[i], policy_rejected_logps=logp[j],
                   ref_chosen_logps=ref[i], ref_rejected_logps=ref[j], chosen_lengths=ones,
                   rejected_lengths=ones, soft_labels=p, **extra)
        total = out.losses.sum()
        total.backward()
        return total

    for _ in range(rounds):
        opt.step(closure)
    return torch.softmax(theta.detach(), -1)


def test_spo_bandit_converges_to_softmax_r_over_alpha() -> None:
    """METHODS §1.8 test 4 (exact expected loss instead of sampled pairs)."""
    r, ref = _rewards_and_ref(k=6, seed=21)
    entropies = []
    for alpha in (0.5, 1.0, 2.0):
        pi = _fit_bandit(get_loss("spo", alpha=alpha), r, ref)
        target = torch.softmax(r / alpha, -1)
        tv = 0.5 * (pi - target).abs().sum().item()
        assert tv < 1e-3, (alpha, tv)
        entropies.append(-(pi * pi.log()).sum().item())
    assert entropies[0] < entropies[1] < entropies[2]
    assert entropies[2] < math.log(6)


def test_spo_bandit_optimum_independent_of_reference_dpo_is_not() -> None:
    """METHODS §1.8 test 5: DPO lands on pi_ref exp(r/beta)/Z, SPO ignores pi_ref."""
    r, ref = _rewards_and_ref(k=6, seed=22)
    _, ref2 = _rewards_and_ref(k=6, seed=23)
    spo = get_loss("spo", alpha=1.0)
    a, b = _fit_bandit(spo, r, ref), _fit_bandit(spo, r, ref2)
    assert 0.5 * (a - b).abs().sum().item() < 1e-3
    dpo = get_loss("dpo", beta=1.0)
    pi = _fit_bandit(dpo, r, ref)
    target = dpo.optimal_logprobs(r, ref).exp()
    assert 0.5 * (pi - target).abs().sum().item() < 1e-3
    assert 0.5 * (pi - a).abs().sum().item() > 0.05  # the two optima genuinely differ


TARGETS = [  # every loss configuration that claims a closed-form optimum
    ("dpo", {"beta": 0.7}), ("spo", {"alpha": 0.7}),
    ("ipo", {"beta": 0.1}), ("ipo", {"beta": 1.0}), ("gipo", {"beta": 0.1}),
    ("gipo", {"beta": 1.0}), ("sft", {}), ("orpo", {"lambda": 0.0}),
    ("simpo", {"beta": 2.0, "gamma": 0.0}), ("cdpo", {"beta": 0.7, "label_smoothing": 0.0}),
    ("rdpo", {"beta": 0.7, "label_smoothing": 0.0}), ("tdpo", {"beta": 0.7, "tdpo2": False}),
]


@pytest.mark.parametrize("seed", [24, 25])
@pytest.mark.parametrize("name,kw", TARGETS)
def test_optimal_logprobs_match_numeric_minimiser(name: str, kw: dict, seed: int) -> None:
    r, ref = _rewards_and_ref(k=6, seed=seed)
    loss = get_loss(name, **kw)
    target = loss.optimal_logprobs(r, ref)
    assert target is not None
    assert target.exp().sum().item() == pytest.approx(1.0, abs=TOL)
    pi = _fit_bandit(loss, r, ref)
    _close(pi.log(), target)


def test_weighted_spo_keeps_the_optimum() -> None:
    """Detached weights make training follow a semi-gradient; its fixed points minimise the
    loss with the weights frozen there. Any frozen positive weights give softmax(r/alpha), and
    the gamma-weighted semi-gradient vanishes at it."""
    r, ref = _rewards_and_ref(k=6, seed=30)
    i, j = _all_pairs(6)
    weighted = get_loss("spo", alpha=1.5, weight="gamma", gamma=2.0)
    target = weighted.optimal_logprobs(r, ref)
    _close(target, torch.log_softmax(r / 1.5, -1))
    logp0 = torch.log_softmax(torch.randn(6, generator=torch.Generator().manual_seed(31),
                                          dtype=torch.float64) * 2, -1)
    ones = torch.ones(len(i), dtype=torch.float64)
    mu = gamma_weights(logp0[i], logp0[j], ones, ones, 2.0)
    assert mu.max() / mu.min() > 2  # genuinely uneven weights
    frozen = get_loss("spo", alpha=1.5, weight_fn=lambda *a: mu)
    _close(_fit_bandit(frozen, r, ref).log(), target)
    theta = target.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    out = weighted(policy_chosen_logps=logp[i], policy_rejected_logps=logp[j],
                   chosen_lengths=ones, rejected_lengths=ones,
                   soft_labels=torch.sigmoid(r[i] - r[j]))
    (g,) = torch.autograd.grad(out.losses.sum(), (theta,))
    _close(g, torch.zeros_like(g))


def test_ipo_optimum_is_pi_ref_exp_win_rate_over_tau() -> None:
    """Azar et al.: pi* ∝ pi_ref exp(tau^-1 E_{y'~mu} P(y > y')), mu uniform here."""
    r, ref = _rewards_and_ref(k=5, seed=26)
    win_rate = torch.sigmoid(r[:, None] - r[None, :]).mean(1)  # includes P(y > y) = 1/2
    expected = torch.log_softmax(ref + win_rate / 0.2, -1)
    _close(get_loss("ipo", beta=0.2).optimal_logprobs(r, ref), expected)


NO_TARGET = [
    ("hinge", {}), ("cdpo", {}), ("rdpo", {}), ("gdpo", {}),
    ("simpo", {}), ("orpo", {}), ("sppo", {}), ("tdpo", {}), ("kto", {}),
    ("spo", {"lambda": 0.5}),
]


@pytest.mark.parametrize("name,kw", NO_TARGET)
def test_losses_without_closed_form_claim_none(name: str, kw: dict) -> None:
    r, ref = _rewards_and_ref()
    assert get_loss(name, **kw).optimal_logprobs(r, ref) is None


def test_cdpo_and_rdpo_optima_are_not_dpo() -> None:
    """With eps > 0 the fitted optimum is not DPO's target: returning it would be wrong."""
    r, ref = _rewards_and_ref(k=6, seed=27)
    r = r * 0.5  # keep every p_ij inside (eps, 1 - eps) so that rdpo has a minimiser
    dpo = get_loss("dpo", beta=0.7).optimal_logprobs(r, ref).exp()
    for name in ("cdpo", "rdpo"):
        pi = _fit_bandit(get_loss(name, beta=0.7, label_smoothing=0.1), r, ref)
        assert 0.5 * (pi - dpo).abs().sum().item() > 1e-2, name


def test_gdpo_has_no_minimiser_and_collapses_onto_the_best_answer() -> None:
    r, ref = _rewards_and_ref(k=6, seed=28)
    loss = get_loss("gdpo", beta=1.0)
    pi = _fit_bandit(loss, r, ref, rounds=5)
    assert pi[r.argmax()].item() > 0.99


def test_sppo_minimiser_is_the_constrained_kkt_point_not_a_softmax() -> None:
    """x_i = m_i - lambda pi_i with one lambda for all answers (see sppo.py)."""
    beta, k = 0.1, 6
    r, ref = _rewards_and_ref(k=k, seed=29)
    pi = _fit_bandit(get_loss("sppo", beta=beta, form="sppo_single"), r, ref)
    t = (torch.sigmoid(r[:, None] - r[None, :]) - 0.5) / beta  # t_ii = 0
    m = t.sum(1) / (k - 1)
    lam = (m - (pi.log() - ref)) / pi
    assert (lam.max() - lam.min()).item() < 1e-5
    assert abs(lam.mean().item()) > 1.0  # the normalisation binds
    # neither softmax(ref + m) nor the multiplicative-weights step pi_ref exp(eta (P - 1/2))
    for guess in (ref + m, ref + (torch.sigmoid(r[:, None] - r[None, :]).mean(1) - 0.5) / beta):
        assert 0.5 * (pi - torch.softmax(guess, -1)).abs().sum().item() > 0.05


def _sppo_population_step(beta: float, r: torch.Tensor, logp_t: torch.Tensor) -> torch.Tensor:
    """Minimise SPPO's paper objective E_{y ~ pi_t}[(x_y - eta (P(y > pi_t) - 1/2))^2] exactly.

    The loss is fed every ordered pair (y_w, y_l) weighted by pi_t(y_w) pi_t(y_l), with the
    exact win rates P(y > pi_t) = sum_j pi_t(j) sigmoid(r_y - r_j) (the population value of
    the outer loop's (1/K) sum_j estimate).
    """
    k = len(r)
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    i, j = i.flatten(), j.flatten()
    pi_t = logp_t.exp()
    win = torch.sigmoid(r[:, None] - r[None, :]) @ pi_t
    w = pi_t[i] * pi_t[j]
    loss = get_loss("sppo", beta=beta)
    theta = logp_t.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, tolerance_grad=1e-13,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(theta, -1)
        out = loss(policy_chosen_logps=logp[i], policy_rejected_logps=logp[j],
                   ref_chosen_logps=logp_t[i], ref_rejected_logps=logp_t[j],
                   chosen_win_rate=win[i], rejected_win_rate=win[j])
        total = (w * out.losses).sum()
        total.backward()
        return total

    for _ in range(3):
        opt.step(closure)
    return torch.log_softmax(theta.detach(), -1)


def test_sppo_step_approaches_multiplicative_weights_as_eta_falls() -> None:
    """METHODS §5: pi_{t+1} ~ pi_t exp(eta P(y > pi_t)) / Z, up to O(eta^3) in log-space.

    The minimiser is x_y = c_y - mu exp(x_y) with c_y = eta (P_y - 1/2) and mu = O(eta^2)
    (E_{pi_t} c = 0), while the multiplicative-weights step is x_y = c_y - log Z: both shift c
    by O(eta^2), and they differ by mu (exp(x_y) - 1) = O(eta^3).
    """
    r, logp_t = _rewards_and_ref(k=6, seed=31)
    errors = []
    for eta in (0.5, 0.25, 0.125):
        fitted = _sppo_population_step(1 / eta, r, logp_t)
        win = torch.sigmoid(r[:, None] - r[None, :]) @ logp_t.exp()
        mw = torch.log_softmax(logp_t + eta * win, -1)
        errors.append((fitted - mw).abs().max().item())
    assert errors[0] < 0.01, errors
    # third order: halving eta divides the gap by about 8 (7-9 leaves room for O(eta^4))
    for big, small in zip(errors, errors[1:]):
        assert 7.0 < big / small < 9.0, errors


def test_sppo_iterates_climb_towards_the_condorcet_winner() -> None:
    """Transitive BT preferences: the von Neumann winner is the best answer; each exact
    SPPO step raises its mass and the iterate's win rate against pi_0 (eta = 1)."""
    r, logp0 = _rewards_and_ref(k=6, seed=32)
    pref = torch.sigmoid(r[:, None] - r[None, :])
    logp, best, wins = logp0, [], []
    for _ in range(4):
        logp = _sppo_population_step(1.0, r, logp)
        best.append(logp.exp()[r.argmax()].item())
        wins.append((logp.exp() @ pref @ logp0.exp()).item())
    assert all(a < b for a, b in zip(best, best[1:])), best
    assert all(a < b for a, b in zip(wins, wins[1:])) and wins[0] > 0.5, wins


# ------------------------------------------------------------------- TRL itself (slow)


@pytest.mark.slow
def test_simpo_and_orpo_match_trl_functions() -> None:
    """Calls TRL's own CPOTrainer.cpo_loss and ORPOTrainer.odds_ratio_loss (imports ~8 s)."""
    pytest.importorskip("trl")
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    b = {k: v.float() if v.is_floating_point() else v
         for k, v in _full(seed=80).items()}
    pc, pr, _, _, lc, lr = _parts(b)
    mw, ml = pc / lc.float(), pr / lr.float()
    device = SimpleNamespace(device="cpu")
    for beta, gamma in ((2.0, 0.5), (2.5, 1.0), (0.1, 0.0)):
        trl = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta,
                              label_smoothing=0.0, accelerator=device)
        losses, chosen_rewards, _ = CPOTrainer.cpo_loss(trl, mw, ml)
        out = get_loss("simpo", beta=beta, gamma=gamma)(**b)
        torch.testing.assert_close(out.losses, losses, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.metrics["rewards/chosen"], chosen_rewards.mean())
    for lam in (0.1, 1.0):
        trl = SimpleNamespace(beta=lam, accelerator=device)
        losses, chosen_rewards, _, ratio, log_odds = ORPOTrainer.odds_ratio_loss(trl, mw, ml)
        out = get_loss("orpo", **{"lambda": lam})(**b)
        torch.testing.assert_close(out.losses, -mw - losses, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.metrics["log_odds_ratio"], ratio)
        torch.testing.assert_close(out.metrics["log_odds_chosen"], log_odds)
