"""SPO's KL regularizer: KL(pi_theta || pi_ref) on online samples from the policy.

Estimator `exact` (METHODS.md §1.4): sample y ~ pi_theta for regularization prompts, then
sum over the sampled positions the exact next-token KL over the whole vocabulary,
sum_v pi_theta(v|x,y_<t) (log pi_theta(v|x,y_<t) - log pi_ref(v|x,y_<t)). Gradients flow
through pi_theta's next-token distributions with the sampled prefixes held fixed (biased,
low variance: the score-function term of the sampling is dropped).
"""

from __future__ import annotations

import torch

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
