"""SPO's exact-vocabulary KL estimator against its definition (METHODS.md §1.8, test 6)."""

from __future__ import annotations

import torch

from harness.tasks.tiny_models import tiny_llama, word_tokenizer
from trainers.regularizers import exact_sequence_kl, sample_completions

WORDS = [f"w{i}" for i in range(12)]


def _models():
    tok = word_tokenizer(WORDS)
    ref = tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, max_positions=32, seed=0)
    policy = tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, max_positions=32, seed=0)
    with torch.no_grad():  # a policy that differs from the reference by a known perturbation
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return tok, policy.eval(), ref.eval()


def test_kl_is_zero_when_policy_is_reference():
    tok, _, ref = _models()
    samples = sample_completions(ref, tok, ["w1 w2"] * 8, max_new_tokens=6, seed=0)
    kl = exact_sequence_kl(ref, ref, samples, tok.pad_token_id)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-6)


def test_exact_kl_matches_monte_carlo_k1():
    """E_y~pi[sum_t KL_t] = E_y~pi[log pi(y) - log ref(y)]; both estimated on the same samples.

    The exact-per-token estimator has far lower variance; with 4,000 samples the MC k1 mean
    has a standard error we compute and the two must agree within 4 of them.
    """
    from trainers.logprobs import batched_completion_logps

    tok, policy, ref = _models()
    samples = sample_completions(policy, tok, ["w3"] * 4000, max_new_tokens=4, seed=123)
    with torch.no_grad():
        exact = exact_sequence_kl(policy, ref, samples, tok.pad_token_id)
    k1 = (batched_completion_logps(policy, samples, tok.pad_token_id, 512)
          - batched_completion_logps(ref, samples, tok.pad_token_id, 512))
    se = float(k1.std() / len(k1) ** 0.5)
    assert float(exact.mean()) > 0.05  # the perturbation is large enough to matter
    assert abs(float(exact.mean()) - float(k1.mean())) < 4 * se + 1e-3


def test_exact_kl_gradient_flows_only_through_policy():
    tok, policy, ref = _models()
    policy.train()
    samples = sample_completions(policy, tok, ["w5"] * 4, max_new_tokens=3, seed=0)
    kl = exact_sequence_kl(policy, ref, samples, tok.pad_token_id).mean()
    kl.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert all(p.grad is None for p in ref.parameters())


def test_k1_and_k3_estimate_the_same_kl_as_exact():
    """All three are unbiased for the sequence KL on policy samples; compare within 4 SE."""
    from trainers.regularizers import k1_sequence_kl, k3_sequence_kl

    tok, policy, ref = _models()
    samples = sample_completions(policy, tok, ["w3"] * 3000, max_new_tokens=4, seed=7)
    with torch.no_grad():
        exact = exact_sequence_kl(policy, ref, samples, tok.pad_token_id)
        for fn in (k1_sequence_kl, k3_sequence_kl):
            est = fn(policy, ref, samples, tok.pad_token_id)
            se = float(est.std() / len(est) ** 0.5)
            assert abs(float(est.mean()) - float(exact.mean())) < 4 * se + 1e-3, fn.__name__
            if fn is k3_sequence_kl:
                assert (est >= -1e-6).all()  # k3 is non-negative sample by sample


def test_k1_gradient_is_the_score_function_gradient():
    from trainers.logprobs import batched_completion_logps
    from trainers.regularizers import k1_sequence_kl

    tok, policy, ref = _models()
    samples = sample_completions(policy, tok, ["w2"] * 6, max_new_tokens=3, seed=3)
    est = k1_sequence_kl(policy, ref, samples, tok.pad_token_id)
    est.mean().backward()
    got = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    # by hand: mean_i (k1_i - mean k1) * grad log pi(y_i)
    with torch.no_grad():
        k1 = (batched_completion_logps(policy, samples, tok.pad_token_id)
              - batched_completion_logps(ref, samples, tok.pad_token_id)).float()
    from trainers.logprobs import completion_logps
    from trainers.tokenize import pad_batch
    seq, _ = completion_logps(policy, pad_batch(samples, tok.pad_token_id))
    ((k1 - k1.mean()) * seq.logps).mean().backward()
    for g, p in zip(got, policy.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_reference_estimator_samples_once_from_the_reference():
    from trainers.regularizers import KLTerm

    tok, policy, ref = _models()
    term = KLTerm(ref, tok, ["w1", "w2", "w3"], seed=0, estimator="reference",
                  prompts_per_step=4, samples_per_prompt=2, max_new_tokens=3)
    assert term.pool is not None and len(term.pool) == 6
    pool_before = [list(e.completion_ids) for e in term.pool]
    with torch.no_grad():
        a = term(policy, step=5)
        b = term(policy, step=5)
    assert float(a) == float(b) and float(a) > 0  # same step, same draw from the fixed pool
    assert [list(e.completion_ids) for e in term.pool] == pool_before
    with torch.no_grad():
        assert float(term(ref, step=5)) < 1e-6  # zero when the policy is the reference
