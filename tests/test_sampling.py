"""The HF backend's per-row sampler: exact draws from softmax(logits / T) within the top-p
nucleus, and each row's draw a function of its own seed only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluators.generation import PerRowSampler

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
N = 20000


def _draws(temperature: float, top_p: float, seeds: range) -> np.ndarray:
    scores = LOGITS.repeat(len(seeds), 1)
    out = PerRowSampler(list(seeds), temperature, top_p)(None, scores)
    return out.argmax(-1).numpy()


def _check_frequencies(draws: np.ndarray, probs: np.ndarray) -> None:
    freq = np.bincount(draws, minlength=len(probs)) / len(draws)
    se = np.sqrt(probs * (1 - probs) / len(draws))
    # 4.5 binomial standard errors per token: a false alarm has probability ~1e-5 per token
    assert np.all(np.abs(freq - probs) <= 4.5 * se + 1e-12), (freq, probs)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_tempered_softmax(temperature: float):
    probs = torch.softmax(LOGITS / temperature, -1).numpy()
    _check_frequencies(_draws(temperature, 1.0, range(N)), probs)


@pytest.mark.parametrize("top_p", [0.5, 0.8, 0.9])
def test_top_p_keeps_hf_s_nucleus_renormalised(top_p: float):
    from transformers import TopPLogitsWarper

    # the nucleus as Hugging Face's own warper keeps it (probs 0.563 0.207 0.126 0.076 0.028)
    keep = torch.isfinite(TopPLogitsWarper(top_p)(None, LOGITS[None].clone()))[0].numpy()
    assert 0 < keep.sum() < len(keep)
    probs = torch.softmax(LOGITS, -1).numpy()
    target = np.where(keep, probs, 0) / probs[keep].sum()
    draws = _draws(1.0, top_p, range(N))
    assert set(np.unique(draws).tolist()) <= set(np.flatnonzero(keep).tolist())
    _check_frequencies(draws, target)


def test_a_rows_draw_depends_on_its_seed_only():
    alone = _draws(1.0, 1.0, range(7, 8))
    in_batch = _draws(1.0, 1.0, range(0, 64))
    assert alone[0] == in_batch[7]
    # and distinct seeds do not all draw the same token
    assert len(set(in_batch.tolist())) > 1
