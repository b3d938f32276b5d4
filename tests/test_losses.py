"""Preference losses against closed forms written out independently (METHODS.md §0-§2).

Tolerance: every tensor here is float64 and every expected value is a closed-form
expression of a handful of elementary operations, so the rounding error is a few ulp
(~1e-15 relative). 1e-6 is therefore far above numerical noise, yet far below any
real formula mistake (a missing 1/alpha, a swapped sign, a dropped reference term
all move values by O(0.1)).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.errors import InputError
from trainers.losses import LOSSES, DPOLoss, SPOLoss, get_loss

TOL = 1e-6
ALPHAS = [0.25, 0.5, 1.0, 2.0, 4.0]
BETAS = [0.05, 0.1, 0.5, 1.0, 3.0]


def _batch(seed: int = 0, n: int = 32) -> dict[str, torch.Tensor]:
    """Sequence log-probs (sums over tokens, so negative and spread over a few nats)."""
    g = torch.Generator().manual_seed(seed)

    def lp() -> torch.Tensor:
        return -torch.rand(n, generator=g, dtype=torch.float64) * 8.0

    return {"policy_chosen_logps": lp(), "policy_rejected_logps": lp(),
            "ref_chosen_logps": lp(), "ref_rejected_logps": lp()}


def _soft(seed: int = 1, n: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0.0, atol=TOL)


# ---------------------------------------------------------------------------- SPO


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
                                    {"kl_estimator": "k1"}, {"reg_max_new_tokens": 0}])
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
    b = _batch(seed=17)
    try:
        loss = get_loss("spo", alpha=1.0, weight_fn=lambda *a: torch.zeros(32))
    except (TypeError, ValueError, NotImplementedError):
        return  # refusing an unsupported option is acceptable
    # otherwise the weight must change the losses
    assert not torch.allclose(loss(**b).losses, get_loss("spo", alpha=1.0)(**b).losses)


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


# ---------------------------------------------------------------------------- optimum


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


def _fit_bandit(loss, r: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Minimise the exact expected loss over all pairs, soft labels sigmoid(r_i - r_j)."""
    i, j = _all_pairs(len(r))
    p = torch.sigmoid(r[i] - r[j])
    theta = torch.zeros(len(r), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(theta, -1)
        out = loss(policy_chosen_logps=logp[i], policy_rejected_logps=logp[j],
                   ref_chosen_logps=ref[i], ref_rejected_logps=ref[j], soft_labels=p)
        total = out.losses.sum()
        total.backward()
        return total

    for _ in range(3):
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
