#!/usr/bin/env python3
"""Build the data of the two lm-eval tasks shipped in evaluators/lm_eval_tasks/.

    python scripts/make_benchmark_data.py          # rewrite the two .jsonl files
    python scripts/make_benchmark_data.py --check  # exit 1 if a shipped file differs

Both are deterministic functions of the package's own data (no network, no randomness
beyond fixed seeds), so the committed files can always be checked against this script
(tests/test_benchmarks.py does).

- `shakespeare_cloze.jsonl`: a multiple-choice cloze over held-out lines of the `sentiment`
  task's corpus. The task orders its lines (at least 6 words, prompt_words 3) with
  `default_rng(0).permutation` and takes its eval, regularization, training and SFT lines
  from the front; the quickstart uses the first 13,088 and the defaults the first 12,576.
  Documents come from position HELD_OUT_START onwards, and a line whose text also appears
  before that position is left out, so no split of a sentiment spec with
  n_eval + n_reg + n_train + sft_lines <= HELD_OUT_START (seed 0, prompt_words 3) has seen
  them. Each document is the first half of a line (its context) and four continuations with
  as many words: the line's own and three from other held-out lines, in a seeded order.
- `bandit_best_answer.jsonl`: the `bandit` task at its default options (8 prompts x 8 answers,
  seed 0): each prompt with every answer as a choice and the answer of highest true reward
  as the gold one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUT = REPO / "evaluators" / "lm_eval_tasks"
HELD_OUT_START = 50_000   # corpus positions (in the task's seed-0 order) never used for training
N_CLOZE = 500             # documents
N_CHOICES = 4
MIN_WORDS = 8             # context >= 4 words, continuation >= 4 words


def cloze_rows() -> list[dict]:
    from harness.tasks.corpus import verse_lines

    lines = verse_lines(min_words=6)  # the sentiment task's lines at prompt_words 3
    order = np.random.default_rng(0).permutation(len(lines))  # its split order at seed 0
    ordered = [lines[i] for i in order]
    seen = set(ordered[:HELD_OUT_START])
    pool, taken = [], set()
    for line in ordered[HELD_OUT_START:]:
        if line in seen or line in taken or len(line.split()) < MIN_WORDS:
            continue
        taken.add(line)
        words = line.split()
        half = len(words) // 2
        pool.append((" ".join(words[:half]), " ".join(words[half:]), len(words) - half))
    by_length: dict[int, list[int]] = {}
    for i, (_, _, n) in enumerate(pool):
        by_length.setdefault(n, []).append(i)
    rng = np.random.default_rng(1)
    rows = []
    for i, (context, continuation, n) in enumerate(pool):
        if len(rows) == N_CLOZE:
            break
        others = [j for j in by_length[n] if j != i and pool[j][1] != continuation]
        if len(others) < N_CHOICES - 1:
            continue
        picked = rng.choice(len(others), size=N_CHOICES - 1, replace=False)
        choices = [continuation] + [pool[others[k]][1] for k in picked]
        if len(set(choices)) < N_CHOICES:
            continue
        perm = rng.permutation(N_CHOICES)
        rows.append({"id": f"cloze-{len(rows):04d}", "context": context,
                     "choices": [choices[k] for k in perm],
                     "label": int(np.flatnonzero(perm == 0)[0])})
    assert len(rows) == N_CLOZE, len(rows)
    return rows


def bandit_rows() -> list[dict]:
    from harness.tasks.bandit import BanditOptions, BanditTask

    task = BanditTask(BanditOptions(), store=None)
    return [{"id": f"bandit-{p}", "prompt": prompt, "choices": list(task.arms),
             "label": int(np.argmax(task.reward_table[p])),
             "rewards": [round(float(r), 6) for r in task.reward_table[p]]}
            for p, prompt in enumerate(task.prompts)]


FILES = {"shakespeare_cloze.jsonl": cloze_rows, "bandit_best_answer.jsonl": bandit_rows}


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = ap.parse_args()
    status = 0
    for name, make in FILES.items():
        text, target = render(make()), OUT / name
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                print(f"{target} differs: run scripts/make_benchmark_data.py", file=sys.stderr)
                status = 1
            continue
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target} ({text.count(chr(10))} rows)")
    return status


if __name__ == "__main__":
    sys.exit(main())
