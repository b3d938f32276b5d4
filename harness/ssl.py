"""Self-supervised PO in the train stage (trainers/losses/ssl.py): a run whose method entry
has `ssl:` trains its loss wrapped with the degree loss, on graded variants of the pairs'
responses.

The variants are built once per pair set and settings, and their reference log-probs once
per reference, each stored as a content-keyed artifact like the pairs' reference log-probs
(`Experiment._reference_logps`): a second run, or a second ssl run with another weight,
computes neither again. They travel in the run's TrainJob (`trainers.self_supervised.SSLData`),
so every executor trains an ssl run alike.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from harness.errors import InputError
from harness.hashing import content_hash

VARIANT_SETTINGS = ("fractions", "keyword_share", "responses")


def check_pairs(pairs: list[dict[str, Any]], label: str) -> None:
    """ssl builds variants of chosen and rejected responses: it needs preference pairs."""
    if pairs and not {"chosen", "rejected"} <= set(pairs[0]):
        kind = ("ranked or best-of-n lists" if "responses" in pairs[0] else
                "unpaired completions" if "completion" in pairs[0] else "prompts alone")
        raise InputError(f"run '{label}': ssl builds graded variants of preference pairs' "
                         f"responses; the training rows are {kind}", field="methods.ssl")


def ssl_data(exp: Any, run: Any) -> Any:
    """The run's `SSLData`: its settings and variants, from the store or built and stored.
    The training loop wraps the run's loss with them (`trainers.loop.train`)."""
    from trainers.self_supervised import SSLData

    check_pairs(exp.assets.pairs, run.label)
    variants, key = _variants(exp, run.ssl)
    return SSLData(dict(run.ssl), variants, _variant_ref_logps(exp, variants, key))


def _variants(exp: Any, s: dict[str, Any]) -> tuple[Any, str]:
    from trainers import rake
    from trainers.self_supervised import Variants, build_variants

    pairs = exp.assets.pairs
    settings = {k: s[k] for k in VARIANT_SETTINGS}
    key = content_hash({"ssl-variants": rake.fingerprint(), "pairs": content_hash(pairs),
                        **settings})
    found = exp.store.get_artifact(key)
    if found is not None:
        exp._count("train", False)
        data = json.loads((found["path"] / "variants.json").read_text())
        return Variants(data["texts"], data["removed"]), key
    variants = build_variants(pairs, s["fractions"], s["keyword_share"], s["responses"])
    staging = exp.store.staging_dir("ssl-variants", key)
    (staging / "variants.json").write_text(json.dumps(variants.as_json()))
    exp.store.commit_artifact("ssl-variants", key, staging, {"n": len(pairs), **settings})
    exp._count("train", True)
    return variants, key


def _variant_ref_logps(exp: Any, variants: Any, variants_key: str) -> torch.Tensor:
    from trainers.self_supervised import variant_reference_logps

    a, cut = exp.assets, exp.spec.training.truncation()
    key = content_hash({"ssl-ref-logps": a.reference_key, "variants": variants_key,
                        "max_length": cut.key(), "eos": a.completion_eos})
    found = exp.store.get_artifact(key)
    if found is not None:
        exp._count("train", False)
        return torch.load(found["path"] / "ssl_ref_logps.pt")
    logps = variant_reference_logps(a.reference_dir, a.pairs, variants, cut, a.completion_eos)
    staging = exp.store.staging_dir("ssl-ref-logps", key)
    torch.save(logps, staging / "ssl_ref_logps.pt")
    exp.store.commit_artifact("ssl-ref-logps", key, staging,
                              {"variants": int(variants.forwarded.sum())})
    exp._count("train", True)
    return logps
