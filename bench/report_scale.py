"""How long the report takes at a research-sized experiment.

20 models x 800 prompts x 4 samples, `judging.pairs: all` (190 pairs, 608,000 battles),
bootstrap 1000 rounds (style control: 100), on synthetic results with known ratings: the
leaderboard records (win rates, LC, Bradley-Terry with and without style control, sample
metrics without embeddings), the by-configuration table, softness and Pareto outputs.
With `--store` the battles are first written to a real results store (not timed) and the
timed part starts by reading every judgment of the plan back through `harness.units`
(`collect_battles`), as `spo-harness report` does. Ends with `report_s=X`; the target on
the 2-core CI machine is under 60 s.

    python bench/report_scale.py [--models 20] [--prompts 800] [--samples 4] [--store]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluators.collect import Battles, ModelResults
from evaluators.pareto import write_pareto
from evaluators.report import ReportSettings, leaderboard_records, write_leaderboard
from evaluators.seeds import write_by_config
from evaluators.softness import write_softness
from harness.units import Judged

WORDS = "the a of to and in is it you that he was for on are with as I his they be".split()


def synthetic(n_models: int, n_prompts: int, n_samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    strength = np.concatenate([[0.0], rng.normal(0, 0.5, n_models - 1)])
    verbosity = rng.uniform(3, 30, n_models)
    difficulty = rng.normal(0, 0.7, n_prompts)
    labels = ["sft"] + [f"m{i:02d}" for i in range(1, n_models)]
    texts = {}
    for m, label in enumerate(labels):
        for p in range(n_prompts):
            for s in range(n_samples):
                n = max(1, int(rng.poisson(verbosity[m])))
                words = " ".join(rng.choice(WORDS, size=n))
                texts[label, p, s] = ("# title\n- " if rng.random() < 0.1 else "") + words

    def judged(a: int, b: int) -> list[Judged]:
        out = []
        for p in range(n_prompts):
            for s in range(n_samples):
                z = strength[b] - strength[a] + 0.3 * difficulty[p] * (a == 0)
                pref = float(1 / (1 + np.exp(-z + rng.normal(0, 0.5))))
                base = {"prompt_id": f"p{p:04d}", "sample_index": s, "text": texts[labels[a], p, s]}
                cand = {"prompt_id": f"p{p:04d}", "sample_index": s, "text": texts[labels[b], p, s]}
                out.append(Judged(base, cand, "", {"preference": pref, "status": "ok"}))
        return out

    results, rows = [], []
    for m, label in enumerate(labels):
        samples = [{"prompt_id": f"p{p:04d}", "sample_index": s, "text": texts[label, p, s],
                    "reward": float(strength[m] + rng.normal()), "rewards": {},
                    "logp": float(-rng.gamma(5, 3)), "ref_logp": float(-rng.gamma(5, 3.2))}
                   for p in range(n_prompts) for s in range(n_samples)]
        for s in samples:
            s["rewards"] = {"oracle": s["reward"]}
        results.append(ModelResults(label=label, method="sft" if m == 0 else "spo",
                                    params={} if m == 0 else {"alpha": 2.0 ** (m % 5 - 2)},
                                    seed=None if m == 0 else m // 5, is_baseline=m == 0,
                                    samples=samples, judged={}))
    for a, b in itertools.combinations(range(n_models), 2):
        pairs = judged(a, b)
        if a == 0:
            results[b].judged["oracle"] = pairs
        rows += [{"prompt_id": j.candidate["prompt_id"], "sample_index": j.candidate["sample_index"],
                  "model_a": labels[a], "model_b": labels[b], "p_b": j.row["preference"],
                  "text_a": j.baseline["text"], "text_b": j.candidate["text"]} for j in pairs]
    return results, {"oracle": Battles(rows, 0, [])}


class _Judge:
    fingerprint = {"judge": "bench"}


def store_round_trip(results: list[ModelResults], root: Path) -> tuple[float, dict]:
    """Write every generation and judgment of the all-pairs plan to a store, then time
    reading the battles back through `Units` exactly as the report stage does."""
    from evaluators.collect import collect_battles
    from harness.hashing import content_hash
    from harness.store import Store
    from harness.tasks.base import Prompt
    from harness.units import Units, battle_plan, judgment_key

    store = Store(root)
    prompts = sorted({s["prompt_id"] for s in results[0].samples})
    n_samples = max(s["sample_index"] for s in results[0].samples) + 1
    units = Units(store, [Prompt(p, f"prompt {p}") for p in prompts], n_samples,
                  {"max_new_tokens": 32, "temperature": 1.0, "top_p": 1.0}, 0)
    keys = {m.label: {(s.prompt.id, s.index): s.key for s in units.slots(f"model-{m.label}")}
            for m in results}
    for m in results:
        store.put_generations([{"key": keys[m.label][s["prompt_id"], s["sample_index"]],
                                "model_key": f"model-{m.label}", "prompt_id": s["prompt_id"],
                                "sample_index": s["sample_index"],
                                "prompt": f"prompt {s['prompt_id']}", "text": s["text"],
                                "token_ids": []} for s in m.samples])
    text = {(m.label, s["prompt_id"], s["sample_index"]): s["text"]
            for m in results for s in m.samples}
    rng = np.random.default_rng(1)
    labels = [m.label for m in results]
    plan = battle_plan(labels, labels[0], "all")
    fp = content_hash(_Judge.fingerprint)
    for a, b in plan:
        store.put_judgments([
            {"key": judgment_key(_Judge.fingerprint, f"prompt {p}", text[a, p, i], text[b, p, i]),
             "judge": fp, "prompt_id": p, "baseline_key": keys[a][p, i],
             "candidate_key": keys[b][p, i], "preference": float(rng.random()),
             "status": "ok"} for p in prompts for i in range(n_samples)])
    t = time.time()
    gens = {m.label: units.generations(f"model-{m.label}") for m in results}
    battles = collect_battles(units, gens, plan, {"oracle": _Judge()})
    return time.time() - t, battles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=800)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--store", action="store_true",
                    help="also time reading the battles from a real results store")
    args = ap.parse_args()
    t = time.time()
    results, battles = synthetic(args.models, args.prompts, args.samples)
    print(f"built {len(battles['oracle'].rows)} battles in {time.time() - t:.1f}s")
    read_s = 0.0
    if args.store:
        store_dir = tempfile.TemporaryDirectory()
        read_s, stored = store_round_trip(results, Path(store_dir.name))
        assert len(stored["oracle"].rows) == len(battles["oracle"].rows)
        print(f"read {len(stored['oracle'].rows)} battles from the store in {read_s:.1f}s")
    settings = ReportSettings(rounds=args.rounds, seed=0, embedder=None)
    t0 = time.time()
    records = leaderboard_records(results, battles, "oracle", settings)
    t1 = time.time()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        write_leaderboard(records, out, "bench")
        write_by_config(results, records, out, settings)
        write_softness(records, out)
        write_pareto(records, out)
    t2 = time.time()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{__import__('os').cpu_count()} cores, python {platform.python_version()}")
    print(f"read_s={read_s:.1f} records_s={t1 - t0:.1f} writing_s={t2 - t1:.1f}")
    print(f"report_s={read_s + t2 - t0:.1f}")


if __name__ == "__main__":
    main()
