"""Does the quickstart's softness trade-off survive another seed? Rerun it and tabulate.

The quickstart trains everything from scratch at one seed, so its numbers move with the
training seed and, through float kernels, with the CPU (README "What the quickstart shows").
This script reruns `examples/quickstart.yaml` under other training seeds (`seeds`) and task
seeds (`task_options.seed`: a new SFT reference and new pairs, the closest stand-in for
another CPU) and prints, per setup, each direction at the sweeps' extremes: '>' where the
95% prompt-bootstrap intervals are separated the expected way, '~' where only the point
estimates are ordered that way, 'x' where they are not.

    .venv/bin/python scripts/quickstart_robustness.py --setups 0:0 0:1 0:2 1:0 1:1

Each setup is TASK_SEED:TRAIN_SEED, run into results/quickstart-robustness/<setup>/ (a rerun
reads the store); about 1-2.5 min each on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "quickstart.yaml"

# (what, run expected higher, run expected lower, metric)
DIRECTIONS = [
    ("SPO win rate falls with alpha", "spo(alpha=0.03)", "spo(alpha=3)", "win_rate"),
    ("SPO reward falls with alpha", "spo(alpha=0.03)", "spo(alpha=3)", "mean_reward"),
    ("SPO entropy rises with alpha", "spo(alpha=3)", "spo(alpha=0.03)", "entropy"),
    ("DPO win rate rises as beta falls", "dpo(beta=0.1)", "dpo(beta=10)", "win_rate"),
    ("DPO reward rises as beta falls", "dpo(beta=0.1)", "dpo(beta=10)", "mean_reward"),
    ("DPO entropy falls as beta falls", "dpo(beta=10)", "dpo(beta=0.1)", "entropy"),
]


def verdict(high: dict, low: dict, metric: str) -> str:
    """'>' separated intervals, '~' ordered point estimates, 'x' the other way."""
    if high[f"{metric}_ci_low"] > low[f"{metric}_ci_high"]:
        return ">"
    return "~" if high[metric] > low[metric] else "x"


def run_setup(task_seed: int, train_seed: int, out_root: Path) -> list[dict]:
    out = out_root / f"{task_seed}-{train_seed}"
    cmd = [sys.executable, "-m", "harness", "run", str(SPEC), "--results-dir", str(out),
           "--quiet", "--set", f"task_options.seed={task_seed}",
           "--set", f"seeds=[{train_seed}]"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((out / "leaderboard.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", nargs="+", default=["0:0", "0:1", "0:2", "1:0", "1:1"],
                        help="TASK_SEED:TRAIN_SEED pairs (0:0 is the quickstart itself)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "quickstart-robustness")
    args = parser.parse_args()
    setups = [tuple(int(x) for x in s.split(":")) for s in args.setups]
    rows = {}
    for t, s in setups:
        board = {r["label"]: r for r in run_setup(t, s, args.out)}
        rows[(t, s)] = [verdict(board[hi], board[lo], m) for _, hi, lo, m in DIRECTIONS]
        extremes = {k: board[k] for k in ("spo(alpha=0.03)", "spo(alpha=3)",
                                          "dpo(beta=0.1)", "dpo(beta=10)")}
        print(f"task seed {t}, training seed {s}: " + "; ".join(
            f"{k} win {r['win_rate']:.1f} reward {r['mean_reward']:.3f} entropy "
            f"{r['entropy']:.1f}" for k, r in extremes.items()), flush=True)
    header = "| direction | " + " | ".join(f"task {t} / train {s}" for t, s in setups) + " |"
    print("\n" + header + "\n|" + "---|" * (len(setups) + 1))
    for i, (what, *_rest) in enumerate(DIRECTIONS):
        print(f"| {what} | " + " | ".join(rows[k][i] for k in setups) + " |")


if __name__ == "__main__":
    main()
