"""What one training step feeds a loss: paired preference batches, or unpaired ones (KTO).

An objective owns the tokenized data and the cached reference log-probs, and turns a list
of example indices into the loss's inputs. The loop only picks indices and steps.
"""

from __future__ import annotations

from typing import Any

import torch

from trainers.logprobs import SequenceLogps, completion_logps, reference_token_kl
from trainers.losses import LossOutput, PreferenceLoss
from trainers.tokenize import Encoded, Truncation, encode, pad_batch


class PairedObjective:
    """Chosen and rejected completions in one concatenated forward (TRL's layout)."""

    def __init__(self, loss_fn: PreferenceLoss, tokenizer, pairs: list[dict[str, Any]],
                 ref_logps: tuple[torch.Tensor, torch.Tensor], max_length: int | Truncation, add_eos: bool,
                 reference=None) -> None:
        self.loss_fn, self.tok, self.reference = loss_fn, tokenizer, reference
        self.chosen = [encode(tokenizer, r["prompt"], r["chosen"], max_length, add_eos)
                       for r in pairs]
        self.rejected = [encode(tokenizer, r["prompt"], r["rejected"], max_length, add_eos)
                         for r in pairs]
        self.soft = (torch.tensor([float(r.get("soft_label", 1.0)) for r in pairs])
                     if any("soft_label" in r for r in pairs) else None)
        # SPPO's per-response win rates against the current iterate, when the rows carry them
        self.win_rates = (torch.tensor([[float(r["chosen_win_rate"]), float(r["rejected_win_rate"])]
                                        for r in pairs])
                          if pairs and all("chosen_win_rate" in r for r in pairs) else None)
        # numbers the rows carry per pair for the loss (SeqPO's earlier-dimension rewards)
        self.row_inputs = {k: torch.tensor([float(r[k]) for r in pairs])
                           for k in getattr(loss_fn, "row_inputs", ())
                           if pairs and all(k in r for r in pairs)}
        self.ref_c, self.ref_r = (t.float() for t in ref_logps)
        self.needs_token_kl = getattr(loss_fn, "requires_token_kl", False)  # TDPO
        self.n = len(pairs)

    def __call__(self, model, idx: torch.Tensor, device) -> tuple[LossOutput, SequenceLogps]:
        b = len(idx)
        batch = pad_batch([self.chosen[i] for i in idx] + [self.rejected[i] for i in idx],
                          self.tok.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        seq, logits = completion_logps(model, batch, return_logits=self.needs_token_kl)
        pc, pr = seq.logps.split(b)
        lc, lr = seq.lengths.split(b)
        extra = {}
        if self.needs_token_kl:
            with torch.no_grad():
                ref_logits = self.reference(input_ids=batch["input_ids"],
                                            attention_mask=batch["attention_mask"]).logits[:, :-1]
            kl_c, kl_r = reference_token_kl(ref_logits, logits, batch["completion_mask"]).split(b)
            extra = {"chosen_token_kl": kl_c, "rejected_token_kl": kl_r}
        if self.win_rates is not None and "chosen_win_rate" in getattr(self.loss_fn,
                                                                        "extra_inputs", ()):
            w = self.win_rates[idx].to(device)
            extra.update(chosen_win_rate=w[:, 0], rejected_win_rate=w[:, 1])
        extra.update({k: v[idx].to(device) for k, v in self.row_inputs.items()})
        out = self.loss_fn(policy_chosen_logps=pc, policy_rejected_logps=pr,
                           ref_chosen_logps=self.ref_c[idx].to(device),
                           ref_rejected_logps=self.ref_r[idx].to(device),
                           chosen_lengths=lc, rejected_lengths=lr,
                           soft_labels=None if self.soft is None else self.soft[idx].to(device),
                           **extra)
        return out, seq


class UnpairedObjective:
    """KTO on unpaired rows {prompt, completion, label}, given as such or unpaired from pairs
    (each pair a desirable chosen and an undesirable rejected completion).

    The reference point uses mismatched (prompt, completion) pairs, as TRL's KTO does; here
    the mismatch is fixed once (item j's prompt with item j+1's completion in a seeded
    shuffle), so the reference log-probs of those pairs are computed once, by the initial
    policy, which is the reference.
    """

    def __init__(self, loss_fn: PreferenceLoss, tokenizer, pairs: list[dict[str, Any]],
                 ref_logps: tuple[torch.Tensor, torch.Tensor], max_length: int | Truncation, add_eos: bool,
                 initial_model, seed: int) -> None:
        from trainers.logprobs import batched_completion_logps

        self.loss_fn, self.tok = loss_fn, tokenizer
        if pairs and "completion" in pairs[0]:  # unpaired rows: the reference is theirs
            items = [(r["prompt"], r["completion"], r["label"]) for r in pairs]
        else:  # pairs: chosen ones then rejected ones, the order of the cached reference
            items = ([(r["prompt"], r["chosen"], True) for r in pairs]
                     + [(r["prompt"], r["rejected"], False) for r in pairs])
        self.items = [encode(tokenizer, p, c, max_length, add_eos) for p, c, _ in items]
        self.desirable = torch.tensor([d for _, _, d in items])
        self.ref = torch.cat([t.float() for t in ref_logps])
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
        partner = torch.empty_like(order)
        partner[order] = order.roll(-1)
        self.mismatched = [encode(tokenizer, items[j][0], items[int(partner[j])][1], max_length,
                                  add_eos) for j in range(len(items))]
        device = next(initial_model.parameters()).device
        self.ref_mismatched = batched_completion_logps(
            initial_model, self.mismatched, tokenizer.pad_token_id, device=device).float()
        self.n = len(items)

    def __call__(self, model, idx: torch.Tensor, device) -> tuple[LossOutput, SequenceLogps]:
        batch = {k: v.to(device) for k, v in
                 pad_batch([self.items[i] for i in idx], self.tok.pad_token_id).items()}
        seq, _ = completion_logps(model, batch)
        with torch.no_grad():  # the reference point carries no gradient (TRL does the same)
            kl_batch = {k: v.to(device) for k, v in
                        pad_batch([self.mismatched[i] for i in idx], self.tok.pad_token_id).items()}
            kl_policy = completion_logps(model, kl_batch)[0].logps
        out = self.loss_fn(policy_logps=seq.logps, ref_logps=self.ref[idx].to(device),
                           desirable=self.desirable[idx].to(device), kl_logps_policy=kl_policy,
                           kl_logps_ref=self.ref_mismatched[idx].to(device))
        return out, seq


def make_objective(loss_fn: PreferenceLoss, tokenizer, pairs, ref_logps, max_length: int | Truncation,
                   add_eos: bool, *, reference=None, initial_model=None, seed: int = 0,
                   ssl=None):
    if ssl is not None:  # Self-supervised PO: the pairs plus their responses' graded variants
        from trainers.self_supervised import VariantObjective

        return VariantObjective(loss_fn, tokenizer, pairs, ref_logps, ssl.variants,
                                ssl.ref_logps, max_length, add_eos, reference)
    if pairs and "responses" in pairs[0]:
        return ListObjective(loss_fn, tokenizer, pairs, max_length, add_eos)
    if getattr(loss_fn, "paired", True):
        return PairedObjective(loss_fn, tokenizer, pairs, ref_logps, max_length, add_eos,
                               reference)
    return UnpairedObjective(loss_fn, tokenizer, pairs, ref_logps, max_length, add_eos,
                             initial_model, seed)




class ListObjective:
    """Ranked lists or best-of-n sets, sorted best -> worst: the Plackett-Luce form of SPO."""

    def __init__(self, loss_fn: PreferenceLoss, tokenizer, rows: list[dict[str, Any]],
                 max_length: int | Truncation, add_eos: bool) -> None:
        if not hasattr(loss_fn, "list_loss"):
            raise ValueError(f"{loss_fn.name} takes pairs; ranked and best-of-n lists are "
                             "supported by spo")
        sizes = {len(r["responses"]) for r in rows}
        kinds = {r["ranked"] for r in rows}
        if len(sizes) != 1 or len(kinds) != 1:
            raise ValueError("all lists must have the same length and the same form "
                             f"(found lengths {sorted(sizes)})")
        self.loss_fn, self.tok = loss_fn, tokenizer
        self.size, self.ranked = sizes.pop(), kinds.pop()
        self.lists = [[encode(tokenizer, r["prompt"], y, max_length, add_eos)
                       for y in r["responses"]] for r in rows]
        self.n = len(rows)

    def __call__(self, model, idx: torch.Tensor, device) -> tuple[LossOutput, SequenceLogps]:
        batch = {k: v.to(device) for k, v in
                 pad_batch([e for i in idx for e in self.lists[i]], self.tok.pad_token_id).items()}
        seq, _ = completion_logps(model, batch)
        out = self.loss_fn.list_loss(seq.logps.view(len(idx), self.size), ranked=self.ranked)
        return out, seq


__all__ = ["Encoded", "ListObjective", "PairedObjective", "UnpairedObjective", "make_objective"]
