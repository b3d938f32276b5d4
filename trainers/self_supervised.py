"""Graded variants of each response for Self-supervised PO (trainers/losses/ssl.py), their
reference log-probs, and the objective that feeds the degree loss.

A response's key content is its top RAKE phrases (trainers/rake.py). Degree k removes the
first round(fractions[k] x T) of its T key phrases, best first, every occurrence of each;
the fractions increase, so each variant holds less key content than the one before.
Everything here is deterministic: the same pairs and settings give the same texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainers import rake
from trainers.logprobs import batched_completion_logps, completion_logps
from trainers.losses.ssl import SelfSupervisedLoss
from trainers.objectives import PairedObjective
from trainers.tokenize import Truncation, encode, pad_batch

RESPONSE_KEYS = {"both": ("chosen", "rejected"), "chosen": ("chosen",)}


@dataclass
class Variants:
    """Graded variants of the pairs' responses: [pair][response][degree]."""

    texts: list[list[list[str]]]
    removed: list[list[list[int]]]   # key phrases removed at each degree

    @property
    def mask(self) -> torch.Tensor:
        """[N, R, K] bool: the variant differs from the one before (degree 0 always counts).
        Removals are nested, so equal counts are equal texts."""
        removed = torch.tensor(self.removed)
        first = torch.ones_like(removed[..., :1], dtype=torch.bool)
        return torch.cat([first, removed[..., 1:] != removed[..., :-1]], -1)

    @property
    def forwarded(self) -> torch.Tensor:
        """[N, R, K] bool: variants whose log-probs need their own forward (in the mask and
        not the response itself, whose log-prob the pair's forward already gives)."""
        return self.mask & (torch.tensor(self.removed) > 0)

    def as_json(self) -> dict[str, Any]:
        return {"texts": self.texts, "removed": self.removed}


@dataclass
class SSLData:
    """What a run with `ssl:` trains on beside its pairs (a TrainJob field, so it travels
    with the job to whichever process trains it): the wrapper's settings, the variants and
    their reference log-probs."""

    settings: dict[str, Any]       # weight, beta, target, responses (and the variants' own)
    variants: Variants
    ref_logps: torch.Tensor        # [N, R, K], see variant_reference_logps

    def wrap(self, loss: Any) -> SelfSupervisedLoss:
        s = self.settings
        return SelfSupervisedLoss(loss, weight=s["weight"], beta=s["beta"], target=s["target"],
                                  responses=s["responses"])


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def graded_variants(text: str, fractions: list[float], keyword_share: float
                    ) -> tuple[list[str], list[int]]:
    """(texts, key phrases removed) of `text` at each fraction of its key content."""
    phrases = rake.key_phrases(text, keyword_share)
    counts = [_round_half_up(f * len(phrases)) for f in fractions]
    return [rake.remove(text, phrases[:n]) for n in counts], counts


def build_variants(pairs: list[dict[str, Any]], fractions: list[float], keyword_share: float,
                   responses: str = "both") -> Variants:
    texts, removed = [], []
    for row in pairs:
        made = [graded_variants(row[key], fractions, keyword_share)
                for key in RESPONSE_KEYS[responses]]
        texts.append([t for t, _ in made])
        removed.append([n for _, n in made])
    return Variants(texts, removed)


def variant_reference_logps(reference_dir: Path, pairs: list[dict[str, Any]],
                            variants: Variants, max_length: int | Truncation,
                            add_eos: bool = True) -> torch.Tensor:
    """[N, R, K] float64 summed log-probs of the forwarded variants under the reference
    (0 elsewhere: the responses themselves take the pairs' cached reference log-probs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reference_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(reference_dir, local_files_only=True,
                                                 dtype=torch.float32).eval()
    todo = variants.forwarded
    where = todo.nonzero().tolist()
    encoded = [encode(tok, pairs[i]["prompt"], variants.texts[i][r][k], max_length, add_eos)
               for i, r, k in where]
    out = torch.zeros(todo.shape, dtype=torch.float64)
    if where:
        out[todo] = batched_completion_logps(model, encoded, tok.pad_token_id)
    return out


class VariantObjective(PairedObjective):
    """The pairs' objective with the base loss, plus the degree loss on the variants.

    The variants go through their own forward, after the pairs', so the base loss's numbers
    are those of the plain objective; at weight 0 they are not forwarded at all and the
    step is exactly the base method's.
    """

    def __init__(self, loss_fn: SelfSupervisedLoss, tokenizer, pairs: list[dict[str, Any]],
                 ref_logps: tuple[torch.Tensor, torch.Tensor], variants: Variants,
                 variant_ref_logps: torch.Tensor, max_length: int | Truncation, add_eos: bool,
                 reference=None) -> None:
        super().__init__(loss_fn.base, tokenizer, pairs, ref_logps, max_length, add_eos,
                         reference)
        self.ssl = loss_fn
        self.mask = variants.mask
        forwarded = variants.forwarded
        self.responses = self.mask.shape[1]
        # reference log-probs: the variants' own, the pairs' where the variant is the response
        own = torch.stack([self.ref_c, self.ref_r][:self.responses], 1)  # [N, R]
        self.variant_ref = torch.where(forwarded, variant_ref_logps.float(),
                                       own.unsqueeze(-1).expand_as(forwarded))
        self.todo = [forwarded[i].nonzero().tolist() for i in range(len(pairs))]
        self.encoded = {(i, r, k): encode(tokenizer, pairs[i]["prompt"],
                                          variants.texts[i][r][k], max_length, add_eos)
                        for i in range(len(pairs)) for r, k in self.todo[i]}

    def __call__(self, model, idx: torch.Tensor, device):
        out, seq = super().__call__(model, idx, device)
        if self.ssl.weight == 0:
            return out, seq
        b = len(idx)
        own = torch.stack(seq.logps.split(b)[:self.responses], 1)  # [b, R], with gradient
        policy = own.unsqueeze(-1).expand(-1, -1, self.mask.shape[2])
        rows = [(j, r, k) for j, i in enumerate(idx.tolist()) for r, k in self.todo[i]]
        if rows:
            batch = pad_batch([self.encoded[(int(idx[j]), r, k)] for j, r, k in rows],
                              self.tok.pad_token_id)
            batch = {key: v.to(device) for key, v in batch.items()}
            values = completion_logps(model, batch)[0].logps
            where = tuple(torch.tensor(c, device=device) for c in zip(*rows))
            policy = policy.index_put(where, values)
        out = self.ssl.combine(out, policy, self.variant_ref[idx].to(device),
                               self.mask[idx].to(device))
        return out, seq
