"""SeqPO (trainers/losses/seqpo.py, harness/sequential.py) against hand-computed values.

The loss on float64 tensors against METHODS.md §8's L_2 written out (tolerance 1e-6, as
tests/test_losses.py); the implicit-reward chain against its recursion by hand; the theory
target against LBFGS minimisers of the exact expected round losses on a bandit; and the
outer loop's resumability: a stored round is never trained again.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from trainers.losses import SeqPOLoss, get_loss

TOL = 1e-6


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.allclose(a, b, atol=TOL, rtol=0), (a - b).abs().max()


def _logps(seed: int, n: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: -torch.rand(n, generator=g, dtype=torch.float64) * 5 for k in (
        "pc", "pr", "p1w", "p1l", "p0w", "p0l")}


def _inputs(x: dict[str, torch.Tensor], prior_w: torch.Tensor, prior_l: torch.Tensor) -> dict:
    """Round 2: the policy pi_theta, the reference pi_1 and P from pi_1/pi_0."""
    return {"policy_chosen_logps": x["pc"], "policy_rejected_logps": x["pr"],
            "ref_chosen_logps": x["p1w"], "ref_rejected_logps": x["p1l"],
            "chosen_prior_reward": prior_w, "rejected_prior_reward": prior_l}


@pytest.mark.parametrize("beta,beta1,lam", [(0.7, 0.3, 0.5), (1.0, 1.0, 1.0), (0.1, 2.0, 0.0)])
def test_round_two_loss_is_methods_l2(beta: float, beta1: float, lam: float) -> None:
    """L_2 = -log sigma(beta[log pi_theta/pi_1 (y_w) - (y_l)] - lam beta_1[log pi_1/pi_0
    (y_w) - (y_l)]), the margin given as P = beta_1 log pi_1/pi_0 per response."""
    x = _logps(1)
    loss = get_loss("seqpo", beta=beta, **{"lambda": lam})
    out = loss(**_inputs(x, beta1 * (x["p1w"] - x["p0w"]), beta1 * (x["p1l"] - x["p0l"])))
    z = (beta * ((x["pc"] - x["p1w"]) - (x["pr"] - x["p1l"]))
         - lam * beta1 * ((x["p1w"] - x["p0w"]) - (x["p1l"] - x["p0l"])))
    _close(out.losses, -F.logsigmoid(z))
    flipped = get_loss("seqpo", beta=beta, margin_sign=-1, **{"lambda": lam})
    out = flipped(**_inputs(x, beta1 * (x["p1w"] - x["p0w"]), beta1 * (x["p1l"] - x["p0l"])))
    z = (beta * ((x["pc"] - x["p1w"]) - (x["pr"] - x["p1l"]))
         + lam * beta1 * ((x["p1w"] - x["p0w"]) - (x["p1l"] - x["p0l"])))
    _close(out.losses, -F.logsigmoid(z))


def test_hand_computed_values() -> None:
    """One pair by hand: h = (-1 - -1.5) - (-2 - -1.8) = 0.7, beta h = 0.35; margin
    lam (P_w - P_l) = 0.5 (0.4 - -0.2) = 0.3; loss = log(1 + exp(-(0.35 - 0.3)))."""
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    out = get_loss("seqpo", beta=0.5, **{"lambda": 0.5})(
        policy_chosen_logps=t(-1.0), policy_rejected_logps=t(-2.0),
        ref_chosen_logps=t(-1.5), ref_rejected_logps=t(-1.8),
        chosen_prior_reward=t(0.4), rejected_prior_reward=t(-0.2))
    assert out.losses.item() == pytest.approx(0.6684596480, abs=TOL)  # log1p(exp(-0.05))
    assert out.metrics["prior/margins"].item() == pytest.approx(0.3, abs=TOL)


def test_round_one_is_dpo_and_soft_labels_swap_the_margin() -> None:
    x = _logps(2)
    zero = torch.zeros_like(x["pc"])
    seq = get_loss("seqpo", beta=0.4)(**_inputs(x, zero, zero))
    dpo = get_loss("dpo", beta=0.4)(**{k: v for k, v in _inputs(x, zero, zero).items()
                                       if "prior" not in k})
    _close(seq.losses, dpo.losses)
    p = torch.rand(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pw, pl = x["p1w"] - x["p0w"], x["p1l"] - x["p0l"]
    loss = get_loss("seqpo", beta=0.4, **{"lambda": 0.8})
    got = loss(**_inputs(x, pw, pl), soft_labels=p).losses
    h = (x["pc"] - x["p1w"]) - (x["pr"] - x["p1l"])
    z = 0.4 * h - 0.8 * (pw - pl)
    _close(got, p * -F.logsigmoid(z) + (1 - p) * -F.logsigmoid(-z))  # swapped pair: -z


def test_prior_rewards_follow_the_chain() -> None:
    """R^_1 = beta (l1 - l0); R^_2 = beta (l2 - l1) - s lam R^_1; P_3 = R^_1 + R^_2."""
    g = torch.Generator().manual_seed(4)
    l0, l1, l2 = (-torch.rand(8, generator=g, dtype=torch.float64) for _ in range(3))
    for sign in (1, -1):
        loss = get_loss("seqpo", beta=0.6, margin_sign=sign, **{"lambda": 0.7})
        _close(loss.prior_rewards([l0]), torch.zeros(8, dtype=torch.float64))
        r1 = 0.6 * (l1 - l0)
        _close(loss.prior_rewards([l0, l1]), r1)
        r2 = 0.6 * (l2 - l1) - sign * 0.7 * r1
        _close(loss.prior_rewards([l0, l1, l2]), r1 + r2)


def _bandit(k: int = 6, dims: int = 3, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(dims, k, generator=g, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), -1)
    return rewards, ref


def _fit_round(loss: SeqPOLoss, r: torch.Tensor, ref: torch.Tensor,
               prior: torch.Tensor) -> torch.Tensor:
    """Minimise the round's exact expected loss over all pairs, soft labels sigmoid(r_i - r_j),
    from the free logits of pi_theta (LBFGS, float64); returns log pi_theta."""
    i, j = torch.triu_indices(len(r), len(r), offset=1)
    p = torch.sigmoid(r[i] - r[j])
    theta = ref.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, tolerance_grad=1e-13,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(theta, -1)
        out = loss(policy_chosen_logps=logp[i], policy_rejected_logps=logp[j],
                   ref_chosen_logps=ref[i], ref_rejected_logps=ref[j], soft_labels=p,
                   chosen_prior_reward=prior[i], rejected_prior_reward=prior[j])
        value = out.losses.sum()
        value.backward()
        return value

    for _ in range(3):
        opt.step(closure)
    return torch.log_softmax(theta.detach(), -1)


@pytest.mark.parametrize("sign", [1, -1])
def test_optimal_logprobs_is_the_minimiser_of_every_round(sign: int) -> None:
    """Three dimensions: each round fitted exactly, the next round's margin from the fitted
    chain (as harness/sequential.py does), the last policy equals optimal_logprobs."""
    rewards, ref = _bandit()
    loss = get_loss("seqpo", beta=0.8, margin_sign=sign, **{"lambda": 0.6})
    chain = [ref]
    for n in range(3):
        prior = loss.prior_rewards(chain)
        chain.append(_fit_round(loss, rewards[n], chain[-1], prior))
        target = get_loss("seqpo", beta=0.8, margin_sign=sign, rounds=n + 1,
                          **{"lambda": 0.6}).optimal_logprobs(rewards, ref)
        _close(chain[-1], target)
    # the closed form: pi_0 exp((R_1 + (R_2 + s lam R_1) + (R_3 + s lam (R_1 + R_2)))/beta)
    r1, r2, r3 = rewards
    expected = ref + (r1 + (r2 + sign * 0.6 * r1) + (r3 + sign * 0.6 * (r1 + r2))) / 0.8
    _close(loss.optimal_logprobs(rewards, ref), torch.log_softmax(expected, -1))


def test_optimal_logprobs_one_dimension_is_dpo_and_too_many_rounds_is_none() -> None:
    rewards, ref = _bandit(dims=1)
    _close(get_loss("seqpo", beta=0.5).optimal_logprobs(rewards[0], ref),
           get_loss("dpo", beta=0.5).optimal_logprobs(rewards[0], ref))
    assert get_loss("seqpo", rounds=2).optimal_logprobs(rewards, ref) is None


@pytest.mark.parametrize("kw,match", [({"margin_sign": 0}, "margin_sign"),
                                      ({"margin_sign": 2}, "margin_sign"),
                                      ({"lambda": -0.1}, "lambda"), ({"beta": 0.0}, "beta"),
                                      ({"rounds": -1}, "rounds"), ({"margin_sign": 1.0}, "margin_sign")])
def test_bad_hyperparameters(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_loss("seqpo", **kw)


def test_missing_priors_are_named() -> None:
    x = _logps(6)
    inputs = {k: v for k, v in _inputs(x, x["pc"], x["pr"]).items() if "prior" not in k}
    with pytest.raises(ValueError, match="chosen_prior_reward"):
        get_loss("seqpo")(**inputs)


# ------------------------------------------------------------------- the outer loop

TINY = """\
name: seqtiny
task: bandit
task_options: {n_prompts: 2, n_arms: 3, sft_samples_per_prompt: 32, sft_epochs: 1,
               dimensions: 2}
methods:
  - name: seqpo
    params: {beta: 1, lambda: 0.5}
training: {epochs: 2, batch_size: 6, learning_rate: 0.003, save_every: 50, log_every: 1,
           kl_log_prompts: 0}
generation: {n_samples: 1, max_new_tokens: 1}
report: {embedding_diversity: false}
"""


def test_a_stored_round_is_not_trained_again(tmp_path, monkeypatch):
    """Both rounds train once; with round 2 removed from the store only round 2 trains
    again, from round 1's stored policy; with both stored nothing trains."""
    import trainers.loop
    from harness.pipeline import Experiment
    from harness.sequential import round_key, train_seqpo
    from harness.spec import load_spec

    (tmp_path / "s.yaml").write_text(TINY)
    exp = Experiment(load_spec(tmp_path / "s.yaml"), tmp_path / "out", show_progress=False)
    real, calls = trainers.loop.train, []

    def counting(job, loss, **kw):
        calls.append((job.label, str(job.reference_dir), job.pairs))
        return real(job, loss, **kw)

    monkeypatch.setattr(trainers.loop, "train", counting)
    run = exp.runs[0]
    key = exp.run_key(run)
    loss = get_loss(run.method, **run.params)
    _, _, history = train_seqpo(exp, run, key, loss, show_progress=False)
    assert [c[0] for c in calls] == [f"{run.label} round 1/2 (dim1)",
                                     f"{run.label} round 2/2 (dim2)"]
    assert {h["round"] for h in history} == {1, 2}
    first = exp.store.get_artifact(round_key(exp, run, 1))
    assert calls[1][1] == str(first["path"])  # round 2's reference: round 1's policy
    assert all(r["chosen_prior_reward"] == 0 for r in calls[0][2])  # round 1: DPO
    assert any(r["chosen_prior_reward"] != 0 for r in calls[1][2])  # round 2: the margin
    assert all(r["dimension"] == "dim2" for r in calls[1][2])

    calls.clear()
    train_seqpo(exp, run, key, loss, show_progress=False)
    assert calls == []  # every round stored: nothing trains

    second = exp.store.get_artifact(round_key(exp, run, 2))
    with exp.store.transaction() as c:
        c.execute("DELETE FROM artifacts WHERE key=?", (round_key(exp, run, 2),))
    shutil.rmtree(second["path"])
    train_seqpo(exp, run, key, loss, show_progress=False)
    assert [c[0] for c in calls] == [f"{run.label} round 2/2 (dim2)"]
    assert calls[0][1] == str(first["path"])


def test_round_models_join_the_leaderboard_and_round_one_is_shared(tmp_path, monkeypatch):
    """After `train`, a run's round 1 is a model `<label>@round1` whose run has rounds 1
    (its theory target: round 1 alone). Round 1 (DPO) does not read lambda or margin_sign:
    a lambda sweep trains it once, and lists it once; round 2 is trained per value."""
    import trainers.loop
    from harness.pipeline import Experiment
    from harness.spec import load_spec

    real, calls = trainers.loop.train, []
    monkeypatch.setattr(trainers.loop, "train",
                        lambda job, loss, **kw: calls.append(job.label) or real(job, loss, **kw))
    (tmp_path / "s.yaml").write_text(TINY.replace("lambda: 0.5", "lambda: [0, 0.5]"))
    exp = Experiment(load_spec(tmp_path / "s.yaml"), tmp_path / "out", show_progress=False)
    exp.train()
    assert calls == ["seqpo(lambda=0) round 1/2 (dim1)", "seqpo(lambda=0) round 2/2 (dim2)",
                     "seqpo(lambda=0.5) round 2/2 (dim2)"]
    labels = [m.label for m in exp.models()]
    assert labels == ["sft", "seqpo(lambda=0)@round1", "seqpo(lambda=0)", "seqpo(lambda=0.5)"]
    round1 = exp.models()[1]
    assert round1.run.params["rounds"] == 1
    assert get_loss(round1.run.method, **round1.run.params).rounds == 1
