"""SPO's KL regularizer: estimators of KL(pi_theta || pi_ref) over regularization prompts.

Each estimator returns one value per sample whose mean is the KL estimate and whose
gradient is the estimator's gradient:

- `exact` (default, METHODS.md §1.4): y ~ pi_theta; sum over the sampled positions of the
  exact next-token KL over the whole vocabulary. Gradients flow through pi_theta's
  next-token distributions with the sampled prefixes held fixed (biased, low variance: the
  score-function term of the sampling is dropped).
- `k1`: y ~ pi_theta; the Monte-Carlo estimate log pi_theta(y) - log pi_ref(y), with the
  unbiased score-function (REINFORCE) gradient E[(k1 - b) grad log pi_theta(y)], b the
  batch mean as a baseline.
- `k3`: y ~ pi_theta; per token (r - 1) - log r with r = pi_ref(y_t)/pi_theta(y_t), summed
  over the sequence (Schulman's low-variance estimator, non-negative), differentiated
  through log pi_theta(y_t) with prefixes fixed, as GRPO does.
- `reference`: the cheap variant: prefixes are drawn once from the frozen reference (a
  pool sampled at the start, no sampling during training) and the exact next-token KL is
  summed along them, as for `exact`.
"""

from __future__ import annotations

import torch

from harness.hashing import seed_from
from trainers.tokenize import Encoded, encode_prompt, left_pad, pad_batch


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], max_new_tokens: int,
                       seed: int) -> list[Encoded]:
    """Sample one completion per prompt at temperature 1 (EOS kept, padding dropped)."""
    device = next(model.parameters()).device
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    batch = {k: v.to(device) for k, v in left_pad(prompt_ids, tokenizer.pad_token_id).items()}
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    out = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                         max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model.train(was_training)
    encoded = []
    for p, ids in zip(prompt_ids, out[:, batch["input_ids"].shape[1]:].tolist()):
        if tokenizer.eos_token_id in ids:
            ids = ids[:ids.index(tokenizer.eos_token_id) + 1]
        encoded.append(Encoded(p, ids))
    return encoded


def exact_sequence_kl(policy, reference, samples: list[Encoded], pad_id: int) -> torch.Tensor:
    """Per-sample sum over completion positions of KL(pi_theta || pi_ref) over the vocabulary."""
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in pad_batch(samples, pad_id).items()}
    logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():
        ref_logits = reference(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].float().log_softmax(-1)
    logq = ref_logits[:, :-1].float().log_softmax(-1)
    kl_tok = (logp.exp() * (logp - logq)).sum(-1)
    mask = batch["completion_mask"][:, 1:].to(kl_tok.dtype)
    return (kl_tok * mask).sum(-1)


def _token_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y_t | x, y_<t) of the sampled tokens [B, T-1] and the completion mask."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].float().log_softmax(-1)
    tok = logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    return tok, batch["completion_mask"][:, 1:].to(tok.dtype)


def _sampled_token_logps(policy, reference, samples: list[Encoded], pad_id: int):
    """Token log-probs of the samples under the policy (with grad) and the reference."""
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in pad_batch(samples, pad_id).items()}
    lp, mask = _token_logps(policy, batch)
    with torch.no_grad():
        lq, _ = _token_logps(reference, batch)
    return lp, lq, mask


def k1_sequence_kl(policy, reference, samples: list[Encoded], pad_id: int) -> torch.Tensor:
    lp, lq, mask = _sampled_token_logps(policy, reference, samples, pad_id)
    seq_p, seq_q = (lp * mask).sum(-1), (lq * mask).sum(-1)
    k1 = (seq_p - seq_q).detach()
    surrogate = (k1 - k1.mean()) * seq_p  # grad = (k1 - b) grad log pi_theta(y)
    return k1 + surrogate - surrogate.detach()


def k3_sequence_kl(policy, reference, samples: list[Encoded], pad_id: int) -> torch.Tensor:
    lp, lq, mask = _sampled_token_logps(policy, reference, samples, pad_id)
    log_r = lq - lp
    return ((log_r.exp() - 1 - log_r) * mask).sum(-1)


# estimator name -> (function, sample from the reference instead of the policy?)
ESTIMATORS = {
    "exact": (exact_sequence_kl, False),
    "k1": (k1_sequence_kl, False),
    "k3": (k3_sequence_kl, False),
    "reference": (exact_sequence_kl, True),
}


class KLTerm:
    """KL(pi_theta || pi_ref) over regularization prompts, one estimate per training step.

    Prompts (and online samples) are drawn with generators seeded from (seed, step), so a
    resumed run draws exactly what an uninterrupted one would.
    """

    def __init__(self, reference, tokenizer, prompts: list[str], seed: int, *,
                 estimator: str = "exact", prompts_per_step: int = 8,
                 samples_per_prompt: int = 1, max_new_tokens: int = 16,
                 sampler=None) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {estimator!r}; known: {sorted(ESTIMATORS)}")
        self.fn, from_reference = ESTIMATORS[estimator]
        # online samples from `sampler` (trainers/online.py, e.g. a vLLM engine synced from
        # the policy); None: the policy's own generate, `sample_completions`
        self.sampler = sampler
        self.reference, self.tokenizer, self.prompts, self.seed = reference, tokenizer, prompts, seed
        self.prompts_per_step, self.samples_per_prompt = prompts_per_step, samples_per_prompt
        self.max_new_tokens = max_new_tokens
        self.pool: list[Encoded] | None = None
        if from_reference:  # sampled once from the frozen reference: no sampling per step
            repeated = [p for p in prompts for _ in range(samples_per_prompt)]
            self.pool = []
            for i in range(0, len(repeated), 64):
                self.pool += sample_completions(reference, tokenizer, repeated[i:i + 64],
                                                max_new_tokens, seed_from(seed, "ref-pool", i))

    def __call__(self, policy, step: int, policy_for_sampling=None) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed_from(self.seed, "reg-prompts", step))
        pick = torch.randint(len(self.prompts), (self.prompts_per_step,), generator=g).tolist()
        spp = self.samples_per_prompt
        if self.pool is not None:
            samples = [self.pool[i * spp + j] for i in pick for j in range(spp)]
        else:
            prompts = [self.prompts[i] for i in pick for _ in range(spp)]
            seed = seed_from(self.seed, "reg-samples", step)
            if self.sampler is None:
                samples = sample_completions(policy_for_sampling or policy, self.tokenizer,
                                             prompts, self.max_new_tokens, seed)
            else:
                samples = self.sampler.sample(policy_for_sampling or policy, prompts,
                                              self.max_new_tokens, seed, step)
        return self.fn(policy, self.reference, samples, self.tokenizer.pad_token_id).mean()
