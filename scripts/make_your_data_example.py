"""Write the data of `examples/your_data.yaml`: preference data in UltraFeedback-binarized's shape.

    python scripts/make_your_data_example.py [--out examples/data]

Two Parquet files, the analogues of UltraFeedback-binarized's `train_prefs` and `test_prefs`,
with its columns (`messages` left out):

- `prompt`: the text of the user's turn;
- `prompt_id`: SHA-256 of the prompt, as UltraFeedback has it;
- `chosen`, `rejected`: the conversation, [{"role": "user", "content": prompt},
  {"role": "assistant", "content": answer}];
- `score_chosen`, `score_rejected`: the answers' rewards on UltraFeedback's 1-10 scale.

The rows are built the way the `sentiment` task builds its pairs (`SentimentTask._build_pairs`),
from its own prompts and reward, without a model, so that they are exact and fast to rebuild:
- prompts: the openings (first three words) of the task's training lines for
  `your_data.parquet` and of its held-out lines for `your_data_test.parquet` (the task's
  splits, seed 0, with 128 held-out and 600 training lines), each prompt once;
- candidates: four answers per prompt, the rest of the prompt's own line and the rests of
  three lines drawn (seeded) from the task's SFT lines, i.e. text of the corpus the task's
  own reference is trained to continue;
- reward: the task's, VADER's compound score r in [-1, 1]; the best and the worst candidate
  form the pair (a prompt whose candidates tie is skipped, as the task skips it), and the score
  is 1 + 4.5 (r + 1), rounded to 2 decimals.

With `soft_label_scale: 1.111` (= 5 / 4.5) the loader's soft label
sigmoid(s (score_chosen - score_rejected)) is the task's own Bradley-Terry probability
sigmoid(5 (r_chosen - r_rejected)), up to the rounding.

Deterministic: the same code, corpus and pyarrow version write the same bytes
(`tests/test_your_data_example.py` rebuilds the files and compares them).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "examples" / "data"
TRAIN_FILE, TEST_FILE = "your_data.parquet", "your_data_test.parquet"
N_TRAIN, N_TEST = 300, 48
CANDIDATES = 4
SEED = 0


def _task():
    from harness.tasks.sentiment import SentimentOptions, SentimentTask

    # the task's splits (held-out lines, 256 regularization lines, then training lines), with
    # enough lines for N_TEST and N_TRAIN pairs after ties and repeated prompts
    options = SentimentOptions(n_eval_prompts=128, n_train_prompts=2 * N_TRAIN, seed=SEED)
    return SentimentTask(options, store=None)


def score(reward: float) -> float:
    """A VADER compound score in [-1, 1] on UltraFeedback's 1-10 scale."""
    return round(1 + 4.5 * (reward + 1), 2)


def rows(task, lines: list[str], pool: list[str], n: int, rng: np.random.Generator,
         seen: set[str]) -> list[dict[str, Any]]:
    """Up to `n` rows in UltraFeedback-binarized's shape, one per distinct prompt not in `seen`."""
    out: list[dict[str, Any]] = []
    for line in lines:
        if len(out) == n:
            break
        prompt, rest = task._split_line(line)
        others = [task._split_line(pool[i])[1] for i in
                  rng.choice(len(pool), size=CANDIDATES - 1, replace=False)]
        if prompt in seen:
            continue
        cands = [c.strip() for c in [rest, *others]]
        r = task.rewards(prompt, cands)
        hi, lo = int(np.argmax(r)), int(np.argmin(r))
        s_hi, s_lo = score(r[hi]), score(r[lo])
        if s_hi == s_lo or cands[hi] == cands[lo]:
            continue  # no preference signal in this prompt's candidates
        seen.add(prompt)

        def turn(answer: str, prompt: str = prompt) -> list[dict[str, str]]:
            return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]

        out.append({"prompt": prompt,
                    "prompt_id": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                    "chosen": turn(cands[hi]), "rejected": turn(cands[lo]),
                    "score_chosen": s_hi, "score_rejected": s_lo})
    if len(out) < n:
        raise SystemExit(f"only {len(out)} rows of {n}: give the task more lines")
    return out


def write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()),
                        ("chosen", pa.list_(message)), ("rejected", pa.list_(message)),
                        ("score_chosen", pa.float64()), ("score_rejected", pa.float64())])
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path, compression="zstd",
                   write_statistics=False)


def build(out: Path = OUT) -> list[Path]:
    """Write both files into `out`; returns their paths."""
    task = _task()
    splits = task._splits()
    rng = np.random.default_rng([SEED, 10])
    seen: set[str] = set()
    # held-out prompts first, so that no training prompt repeats one of them
    test = rows(task, splits["eval"], splits["sft"], N_TEST, rng, seen)
    train = rows(task, splits["train"], splits["sft"], N_TRAIN, rng, seen)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / TRAIN_FILE, out / TEST_FILE]
    for records, path in zip((train, test), paths):
        write_parquet(records, path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write into")
    for path in build(parser.parse_args().out):
        print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
