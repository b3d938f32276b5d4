"""SPO's KL regularizer pinned to formulas: gradients of every estimator, and lambda's effect.

`tests/test_regularizers.py` checks the estimators' values (zero at the reference, agreement
with each other in expectation) but only that the exact estimator's gradient is nonzero, so
a wrong gradient (a k3 sign flip, an inverted ratio, a dropped term or detach) survives it.
Here the gradient each estimator hands to the optimizer is compared with a formula written
out in this file:

- for a fixed set of samples, through `KLTerm` as the training loop calls it, the gradient
  with respect to the policy's logits (captured with `retain_grad`) against the closed form
  of the surrogate the estimator's docstring describes (METHODS.md §1.4);
- in expectation, by enumerating every one-token completion of a prompt with its
  probability as weight: exact and k1 must give the gradient of KL(pi || ref) (checked
  itself against finite differences), k3 the gradient of KL(ref || pi), i.e. pi - ref;
- on the bandit, through the real training loop (`trainers.loop.train`), lambda > 0 must
  lower the exact KL of the trained policy's answer distribution to the reference, more
  for larger lambda (METHODS.md §1.6 caveat: "with lambda > 0 the optimum is a compromise").

Models are float64 so that the formulas here are computed in float64; the estimators cast
logits to float32 (`.float()`), which sets the tolerances below.
"""

from __future__ import annotations

import pytest
import torch

from harness.tasks.tiny_models import tiny_llama, word_tokenizer
from trainers.regularizers import (
    KLTerm,
    exact_sequence_kl,
    k1_sequence_kl,
    k3_sequence_kl,
)
from trainers.tokenize import Encoded, encode_prompt

WORDS = [f"w{i}" for i in range(12)]
PROMPTS = ["w1", "w4", "w7"]  # one word each: every prompt is [BOS, word], 2 tokens
PROMPT_LEN = 2
# float32 arithmetic inside the estimators: relative error ~1e-6 on O(1) logits; a wrong
# formula changes the gradient by O(1) of its own size.
RTOL = 1e-4


def _models():
    """A float64 policy and reference that differ by a fixed perturbation (KL ~ 0.1-1)."""
    tok = word_tokenizer(WORDS)
    kw = dict(hidden_size=32, num_layers=1, num_heads=2, max_positions=32, seed=0)
    ref = tiny_llama(tok, **kw).double().eval().requires_grad_(False)
    policy = tiny_llama(tok, **kw).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return tok, policy, ref


class Capture(torch.nn.Module):
    """Wraps a causal LM and keeps every forward's inputs and (grad-retaining) logits."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        out.logits.retain_grad()
        self.calls.append((input_ids, attention_mask, out.logits))
        return out


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = float(want.abs().max())
    assert scale > 1e-4, f"{what}: the expected gradient is ~0, the test would be vacuous"
    err = float((got - want).abs().max())
    assert err <= RTOL * scale, f"{what}: max |got - want| = {err:.3g}, scale {scale:.3g}"


def _closed_form_logit_grad(estimator: str, logits, ref_logits, input_ids, mask):
    """d(mean_i estimate_i)/d logits for fixed samples, written out per estimator.

    p_t = softmax(logits[:, t]), q_t = softmax(ref_logits[:, t]) predict token y = ids[:, t+1];
    m_t = 1 on completion tokens; B rows. Position T-1 predicts nothing (zero gradient).
      exact / reference: m_t p_t (log p_t - log q_t - KL(p_t||q_t)) / B
      k1: (k1_i - mean_j k1_j) m_t (onehot(y) - p_t) / B,  k1_i = sum_t m_t log(p_t(y)/q_t(y))
      k3: m_t (1 - q_t(y)/p_t(y)) (onehot(y) - p_t) / B
    Also returns the per-sample value each estimator must report.
    """
    b = logits.shape[0]
    logp = logits[:, :-1].log_softmax(-1)
    logq = ref_logits[:, :-1].log_softmax(-1)
    p = logp.exp()
    m = mask[:, 1:].to(logp.dtype)
    y = input_ids[:, 1:]
    grad = torch.zeros_like(logits)
    if estimator in ("exact", "reference"):
        kl_t = (p * (logp - logq)).sum(-1)
        grad[:, :-1] = m[..., None] * p * (logp - logq - kl_t[..., None]) / b
        return grad, (kl_t * m).sum(-1)
    lp = logp.gather(-1, y[..., None]).squeeze(-1)
    lq = logq.gather(-1, y[..., None]).squeeze(-1)
    score = torch.nn.functional.one_hot(y, logits.shape[-1]).to(p.dtype) - p  # d log p(y)/d z
    if estimator == "k1":
        k1 = ((lp - lq) * m).sum(-1)
        grad[:, :-1] = ((k1 - k1.mean())[:, None] * m)[..., None] * score / b
        return grad, k1
    ratio = (lq - lp).exp()  # r = q(y)/p(y)
    grad[:, :-1] = (m * (1 - ratio))[..., None] * score / b
    return grad, ((ratio - 1 - (lq - lp)) * m).sum(-1)


@pytest.mark.parametrize("estimator", ["exact", "k1", "k3", "reference"])
def test_klterm_gradient_matches_the_closed_form_for_its_samples(estimator):
    """The gradient `KLTerm` returns, for the samples it drew, is the documented surrogate's.

    Catches any change to what an estimator differentiates: k3's sign or ratio inverted
    (q/p -> p/q), a detach added to or dropped from a term (k1 without its detach leaks
    d k1/d theta; exact with p detached loses the p log p term), k1's baseline dropped,
    the reference pool's prefixes resampled from the policy. The formula is evaluated in
    float64 on the same logits; the estimator's float32 cast bounds the mismatch to ~1e-6
    of the gradient's size, far below the O(1) change any of these bugs makes (RTOL 1e-4).
    """
    tok, policy, ref = _models()
    wrapped = Capture(policy)
    term = KLTerm(ref, tok, PROMPTS, seed=3, estimator=estimator, prompts_per_step=6,
                  samples_per_prompt=2, max_new_tokens=4)
    value = term(wrapped, step=2, policy_for_sampling=policy)
    value.backward()
    assert len(wrapped.calls) == 1
    ids, attn, logits = wrapped.calls[0]
    completion = attn.clone()
    completion[:, :PROMPT_LEN] = 0  # every prompt is [BOS, word]
    assert (completion.sum(1) > 0).all()
    if estimator == "reference":  # prefixes are pool entries, drawn once from the reference
        assert term.pool is not None, "the reference estimator must sample a fixed pool"
        pool = {tuple(e.prompt_ids + e.completion_ids) for e in term.pool}
        rows = {tuple(r[a.bool()].tolist()) for r, a in zip(ids, attn)}
        assert rows <= pool
    with torch.no_grad():
        ref_logits = ref(input_ids=ids, attention_mask=attn).logits
    want_grad, want_value = _closed_form_logit_grad(estimator, logits.detach(), ref_logits,
                                                    ids, completion)
    assert float(value.detach()) == pytest.approx(float(want_value.mean()), rel=RTOL)
    _assert_close(logits.grad, want_grad, estimator)


def _kl(z: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    logp = z.log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum()


@pytest.mark.parametrize("estimator", ["exact", "k1", "k3"])
def test_expected_gradient_over_all_one_token_completions(estimator):
    """Enumerate every one-token completion y of a prompt, weight estimate(y) by pi(y).

    The weighted sum is the estimator's expectation exactly (no sampling noise): its value
    must be KL(pi||ref) for all three, and its gradient w.r.t. the prompt's next-token
    logits z must be d KL(pi||ref)/dz = pi (log pi - log ref - KL) for exact and k1 (the
    k1 baseline term vanishes: sum_y pi(y) d log pi(y) = 0), and pi - ref for k3 (GRPO's
    k3 gradient is, in expectation, that of KL(ref||pi)). The reverse-KL closed form is
    first checked against float64 central finite differences (step 1e-6, error ~1e-9).
    Catches a k3 ratio inverted (expected gradient pi - ref -> its negative, to first
    order) or sign-flipped, k1's score-function term replaced by a pathwise one, an exact
    KL missing its log-ref term. Tolerance: float32 inside the estimators, as above.
    """
    tok, policy, ref = _models()
    prompt = encode_prompt(tok, "w3")
    vocab = len(tok)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        z = policy(input_ids=ids).logits[0, -1]
        logq = ref(input_ids=ids).logits[0, -1].log_softmax(-1)
    pi, q = z.softmax(-1), logq.exp()
    kl = float(_kl(z, logq))
    assert kl > 0.05

    reverse = pi * (z.log_softmax(-1) - logq - kl)
    eps = 1e-6
    fd = torch.stack([(_kl(z + eps * e, logq) - _kl(z - eps * e, logq)) / (2 * eps)
                      for e in torch.eye(vocab, dtype=z.dtype)])
    assert float((fd - reverse).abs().max()) < 1e-7

    fn = {"exact": exact_sequence_kl, "k1": k1_sequence_kl, "k3": k3_sequence_kl}[estimator]
    wrapped = Capture(policy)
    samples = [Encoded(list(prompt), [y]) for y in range(vocab)]
    est = fn(wrapped, ref, samples, tok.pad_token_id)
    expected = (pi * est).sum()
    expected.backward()
    logits = wrapped.calls[0][2]
    got = logits.grad[:, len(prompt) - 1].sum(0)  # every row's prompt logits are z
    assert float(expected.detach()) == pytest.approx(kl, rel=RTOL)
    _assert_close(got, reverse if estimator != "k3" else pi - q, estimator)


@pytest.fixture(scope="module")
def bandit(tmp_path_factory):
    """The bandit task's own SFT reference and soft-labelled pairs (3 prompts x 4 arms)."""
    from harness.store import Store
    from harness.tasks.bandit import BanditOptions, BanditTask

    root = tmp_path_factory.mktemp("bandit-kl")
    task = BanditTask(BanditOptions(n_prompts=3, n_arms=4, sft_samples_per_prompt=64,
                                    sft_epochs=2, hidden_size=16, num_layers=1),
                      Store(root / "store"))
    task.show_progress = False
    return task.prepare(lambda unit, computed: None), root


def _answer_kl(model, reference, tok, prompts) -> float:
    """Mean over prompts of the exact KL of the one-token answer distributions (full vocab)."""
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([encode_prompt(tok, p)])
            lp = model.double()(input_ids=ids).logits[0, -1].log_softmax(-1)
            lq = reference(input_ids=ids).logits[0, -1].log_softmax(-1)
            out.append(float((lp.exp() * (lp - lq)).sum()))
    return sum(out) / len(out)


def test_lambda_lowers_the_exact_kl_monotonically_on_the_bandit(bandit):
    """SPO through the real loop for lambda in {0, 0.1, 1, 10}: the trained policy's exact
    KL to the reference over the bandit's answers must fall by at least 20% at each step.

    Catches lambda ignored (loop adds the KL unweighted, or not at all; the spec's `lambda`
    not reaching `kl_weight`), the regularizer's sign flipped (KL would rise), and an
    estimator whose gradient does not reduce the KL. With one-token answers and
    reg_max_new_tokens=1 the exact estimator is the answer KL itself, so the outcome is
    deterministic; measured values ~0.11, 0.058, 0.016, 0.0017 (bandit seeds 0-2 give the
    same pattern, consecutive ratios 0.35-0.6), so the 0.8 ratio leaves a wide margin.
    30 steps per run, about half a second each.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.spec import TrainingSpec
    from trainers.loop import TrainJob, compute_reference_logps, train
    from trainers.losses import LOSSES

    assets, root = bandit
    tok = AutoTokenizer.from_pretrained(assets.reference_dir, local_files_only=True)
    reference = AutoModelForCausalLM.from_pretrained(
        assets.reference_dir, local_files_only=True, dtype=torch.float64).eval()
    ref_logps = compute_reference_logps(assets.reference_dir, assets.pairs, 8, add_eos=False)
    kls = []
    for lam in (0.0, 0.1, 1.0, 10.0):
        spec = TrainingSpec(epochs=10, batch_size=6, learning_rate=0.01, max_length=8,
                            save_every=10**9, log_every=10**9, kl_log_prompts=0)
        job = TrainJob(label=f"spo-{lam}", seed=0, reference_dir=assets.reference_dir,
                       pairs=assets.pairs, reg_prompts=assets.reg_prompts, training=spec,
                       work_dir=root / f"work-{lam}", ref_logps=ref_logps, add_eos=False)
        loss = LOSSES.get("spo")(alpha=1.0, **{"lambda": lam}, kl_estimator="exact",
                                 reg_prompts_per_step=3, reg_max_new_tokens=1)
        model, _, _ = train(job, loss, show_progress=False)
        kls.append(_answer_kl(model.eval(), reference, tok, assets.reg_prompts))
    assert kls[0] > 0.05, kls  # SPO alone moves the policy well away from the reference
    for lo, hi in zip(kls[1:], kls[:-1]):
        assert lo < 0.8 * hi, kls
