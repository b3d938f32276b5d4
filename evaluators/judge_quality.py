"""How far each configured judge can be trusted: `judge_quality.{md,json}` per experiment.

For every judge of the spec, over the same (baseline sample i, candidate sample i) pairs the
judge stage judged: how many judgments succeeded, failed or are missing; agreement with the
task's oracle Bradley-Terry judge (the share of pairs where both prefer the same answer,
pairs either calls a tie excluded, and the mean |P - P_oracle|); the position-flip rate
(judges asked in both orders: the verdict changed when the answers were swapped, as MT-Bench's
inconsistency count); the share of decided judgments won by the longer answer (in words; the
length bias lm-sys/FastChat#3911 measured); and the judge calls and tokens spent, from the
info stored with each judgment.

Sharper measures beside those (the biases lm-sys/FastChat#3911 reports: the longer answer
wins 68%, GPT-4 prefers itself 87%, 12.9% of verdicts flip):

- `oracle_kappa`: Cohen's kappa of the judge's and the oracle's verdicts on the pairs both
  decided (candidate wins / baseline wins), i.e. agreement corrected for the agreement two
  raters with these verdict frequencies reach by chance. `oracle_kappa_3way` keeps ties
  (win / tie / loss, linearly weighted since the three are ordered: a tie against a win is
  half a disagreement); without ties it equals `oracle_kappa`.
- `length_bias_coef`: the slope of a logistic regression of the judge's preference (soft:
  each pair is a y=1 row of weight P and a y=0 row of weight 1 - P) on the normalized length
  difference (len_candidate - len_baseline) / (len_candidate + len_baseline) in characters
  (Arena-Hard's style-control normalization, there in tokens), with an intercept; in log-odds
  per unit of that difference (+1 = only the candidate has text). `length_bias_se` is its
  standard error from the binomial Fisher information (as statsmodels' GLM Binomial), which
  is conservative for soft verdicts (a soft label varies less than a 0/1 one), and
  `length_bias_p` the two-sided Wald p-value. On a task such as sentiment a longer answer may
  really be better, so the same regression of the ORACLE's preference is fitted on the same
  pairs, and `length_bias_excess` = judge slope - oracle slope is the bias beyond what the
  oracle itself rewards. Pairs with identical answers are left out (nothing to prefer).
- `self_preference`: when the judge's model is one of the models compared (or their base
  model), the judge's win rate for its own side minus the oracle's win rate on the same pairs
  (without an oracle: minus the mean of the other judges' verdicts on those pairs).
- `cost`: prompt_tokens/1000 * prompt_per_1k + completion_tokens/1000 * completion_per_1k,
  in whatever currency the prices were given in.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from evaluators.collect import ModelResults
from evaluators.llm_judge import longer
from harness.hashing import canonical_json, content_hash
from harness.jsonio import dumps, finite_or_none, write_text_atomic
from harness.units import Judged

TIE = 1e-9  # |P - 1/2| below this is a tie
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a 95% Wald interval
COLUMNS = ["n_pairs", "n_judged", "n_failed", "n_missing", "oracle_agreement",
           "oracle_mean_abs_diff", "flip_rate", "longer_win_share", "calls", "prompt_tokens",
           "completion_tokens", "oracle_kappa", "oracle_kappa_3way", "length_bias_coef",
           "length_bias_se", "length_bias_p", "length_bias_excess", "self_preference", "cost"]


# ---------------------------------------------------------------------------- measures

def _verdict(p: float) -> int:
    """1 candidate wins, 0 tie, -1 baseline wins."""
    return 0 if abs(p - 0.5) <= TIE else (1 if p > 0.5 else -1)


def oracle_kappas(judge: list[float], oracle: list[float]) -> tuple[float | None, float | None]:
    """(binary kappa on the pairs both decided, linearly weighted win/tie/loss kappa on all).

    None where kappa is undefined: no pairs, or both raters gave one and the same verdict
    throughout (chance agreement 1, so kappa is 0/0; sklearn would warn and return NaN).
    """
    from sklearn.metrics import cohen_kappa_score

    def kappa(a: list[int], b: list[int], labels: list[int], weights: str | None) -> float | None:
        if not a or (len(set(a)) == 1 and set(a) == set(b)):
            return None
        return float(cohen_kappa_score(a, b, labels=labels, weights=weights))

    three = ([_verdict(p) for p in judge], [_verdict(p) for p in oracle])
    decided = [(a, b) for a, b in zip(*three) if a != 0 and b != 0]
    return (kappa([a for a, _ in decided], [b for _, b in decided], [-1, 1], None),
            kappa(*three, [-1, 0, 1], "linear"))


def normalized_length_diff(baseline: str, candidate: str) -> float:
    """(len_c - len_b) / (len_c + len_b) in characters, in [-1, 1]; 0 for two empty texts."""
    b, c = len(baseline), len(candidate)
    return (c - b) / (c + b) if b + c else 0.0


def length_bias_fit(x: list[float], p: list[float]) -> dict[str, Any]:
    """Logistic regression of soft preferences `p` on `x` with an intercept.

    Returns coef (slope), se, ci (95% Wald), p (two-sided Wald), intercept, n, and `note`
    (why the values are None: the maximum-likelihood slope does not exist when the data are
    separated, e.g. one judgment, all verdicts one way, or every 'win' longer than every
    'loss'; the optimizer would only report how far it walked towards infinity).
    """
    import numpy as np
    from scipy.stats import norm
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    out: dict[str, Any] = {"coef": None, "se": None, "ci": None, "p": None, "intercept": None,
                           "n": len(x), "note": None}
    # 1-D with intercept: the MLE exists iff the x of rows weighing on y=1 and of rows
    # weighing on y=0 overlap (Albert & Anderson); else some threshold (quasi-)separates them
    ones = [xi for xi, pi in zip(x, p) if pi > 0]
    zeros = [xi for xi, pi in zip(x, p) if pi < 1]
    if not ones or not zeros or max(zeros) <= min(ones) or max(ones) <= min(zeros):
        out["note"] = ("no fit: fewer than two pairs, one verdict throughout, or the "
                       "verdicts separated by length (the slope would be infinite)")
        return out
    xs = np.asarray(x, dtype=float)
    ps = np.asarray(p, dtype=float)
    keep = np.concatenate([ps > 0, ps < 1])  # zero-weight copies add nothing
    X = np.concatenate([xs, xs])[keep].reshape(-1, 1)
    y = np.concatenate([np.ones_like(xs), np.zeros_like(xs)])[keep]
    w = np.concatenate([ps, 1 - ps])[keep]
    # C=inf: no penalty (works from sklearn 1.4 through 1.8+, where `penalty` is deprecated);
    # Newton steps reach the optimum to ~1e-10, which the statsmodels test needs
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, sample_weight=w)
    if any(issubclass(c.category, ConvergenceWarning) for c in caught):
        out["note"] = "no fit: the logistic regression did not converge"
        return out
    b0, b1 = float(model.intercept_[0]), float(model.coef_[0, 0])
    # Fisher information of the binomial likelihood; each pair's two copies weigh 1 together
    mu = 1 / (1 + np.exp(-(b0 + b1 * xs)))
    design = np.column_stack([np.ones_like(xs), xs])
    info = design.T @ (design * (mu * (1 - mu))[:, None])
    try:
        var = float(np.linalg.inv(info)[1, 1])
    except np.linalg.LinAlgError:
        var = math.nan
    se = math.sqrt(var) if math.isfinite(var) and var > 0 else None
    out.update(coef=b1, intercept=b0, se=se)
    if se is not None:
        out.update(ci=[b1 - Z95 * se, b1 + Z95 * se], p=float(2 * norm.sf(abs(b1) / se)))
    return finite_or_none(out)


def judge_model_identity(fingerprint: dict[str, Any]) -> str | None:
    """The judge's model identity from its fingerprint, comparable with `model_fingerprint`.

    llm judge: {"model": {"content": <hash>}} (hf backend: the folder's content hash) or
    {"model": "<served name>"} (openai backend: all a server says about its model);
    reward_model judge: {"model": <hash>}. Any other judge (the oracle, a table) has none.
    """
    if not isinstance(fingerprint, dict) or fingerprint.get("judge") not in ("llm",
                                                                             "reward_model"):
        return None
    model = fingerprint.get("model")
    if isinstance(model, dict):
        model = model.get("content")
    return model if isinstance(model, str) and model else None


def _price(prices: Any, key: str) -> float:
    # a plain dict (from JSON) or the spec's PricesSpec
    return float(prices[key] if isinstance(prices, dict) else getattr(prices, key))


def judge_cost(prompt_tokens: int | None, completion_tokens: int | None,
               prices: Any | None) -> float | None:
    """Money spent, in the prices' own (unnamed) currency; None without prices or tokens."""
    if prices is None or prompt_tokens is None or completion_tokens is None:
        return None
    return (prompt_tokens / 1000 * _price(prices, "prompt_per_1k")
            + completion_tokens / 1000 * _price(prices, "completion_per_1k"))


def _self_preference(ok: list[dict[str, Any]], note: str | None) -> dict[str, Any]:
    """Judge's mean P(own side wins) minus the reference's on the same pairs."""
    out: dict[str, Any] = {"self_preference": None, "self_preference_judge": None,
                           "self_preference_reference": None, "self_preference_against": None,
                           "n_self_pairs": 0, "self_preference_note": note}
    if note is not None:
        return out
    own = [r for r in ok if r.get("own")]
    if not own:
        out["self_preference_note"] = ("no pair has exactly one side that is (or was tuned "
                                       "from) the judge's model")
        return out

    def mine(r: dict, p: float) -> float:  # P(the judge's own side wins)
        return p if r["own"] == "candidate" else 1 - p

    if any(r.get("oracle") is not None for r in own):
        against = "oracle"
        pairs = [(mine(r, r["preference"]), mine(r, r["oracle"]))
                 for r in own if r.get("oracle") is not None]
    else:  # no oracle: the judges that do not share this model, pair by pair
        against = "other judges"
        pairs = [(mine(r, r["preference"]), sum(mine(r, q) for q in r["others"])
                  / len(r["others"])) for r in own if r.get("others")]
    if not pairs:
        out["self_preference_note"] = ("no oracle and no other judge's verdict on the pairs "
                                       "of the judge's own model")
        return out
    judge = sum(a for a, _ in pairs) / len(pairs)
    ref = sum(b for _, b in pairs) / len(pairs)
    out.update(self_preference=judge - ref, self_preference_judge=judge,
               self_preference_reference=ref, self_preference_against=against,
               n_self_pairs=len(pairs))
    return out


def judge_quality_stats(rows: list[dict[str, Any]], prices: Any | None = None,
                        self_note: str | None = None) -> dict[str, Any]:
    """Statistics of one judge over judgment rows.

    Each row: `status` ('ok', 'failed: ...', or None when not stored), `preference`
    (P(candidate wins)), `oracle` (the oracle's P, or None), `longer` ('candidate' |
    'baseline' | 'equal') and `info` (the stored info dict); optionally `length_diff`
    (normalized character difference; None or absent: identical answers, left out of the
    length fit), `own` ('candidate' | 'baseline' | None: which side is the judge's own model)
    and `others` (other judges' P on the pair). `prices`: {"prompt_per_1k",
    "completion_per_1k"} or None; `self_note`: why self-preference cannot be measured at all.
    """
    def is_ok(r: dict) -> bool:
        return r["status"] == "ok" and r["preference"] is not None

    ok = [r for r in rows if is_ok(r)]
    with_oracle = [r for r in ok if r.get("oracle") is not None]
    decided = [r for r in with_oracle
               if abs(r["preference"] - 0.5) > TIE and abs(r["oracle"] - 0.5) > TIE]
    flips = [r["info"]["flipped"] for r in ok if r["info"].get("flipped") is not None]
    by_length = [r for r in ok if abs(r["preference"] - 0.5) > TIE and r["longer"] != "equal"]
    spent = [r["info"] for r in rows if r["status"] is not None and "calls" in r["info"]]

    def share(hits: int, n: int) -> float | None:
        return hits / n if n else None

    kappa, kappa3 = oracle_kappas([r["preference"] for r in with_oracle],
                                  [r["oracle"] for r in with_oracle])
    sized = [r for r in ok if r.get("length_diff") is not None]
    fit = length_bias_fit([r["length_diff"] for r in sized], [r["preference"] for r in sized])
    sized_o = [r for r in sized if r.get("oracle") is not None]
    # the excess compares like with like: both slopes on the pairs the oracle rated
    judge_o = (fit if len(sized_o) == len(sized) else
               length_bias_fit([r["length_diff"] for r in sized_o],
                               [r["preference"] for r in sized_o]))
    oracle_fit = length_bias_fit([r["length_diff"] for r in sized_o],
                                 [r["oracle"] for r in sized_o])
    excess = (judge_o["coef"] - oracle_fit["coef"]
              if sized_o and judge_o["coef"] is not None and oracle_fit["coef"] is not None
              else None)
    prompt_tokens = sum(i.get("prompt_tokens", 0) for i in spent) if spent else None
    completion_tokens = sum(i.get("completion_tokens", 0) for i in spent) if spent else None
    stats = {
        "n_pairs": len(rows), "n_judged": len(ok),
        "n_failed": sum(1 for r in rows if r["status"] is not None and not is_ok(r)),
        "n_missing": sum(1 for r in rows if r["status"] is None),
        "oracle_agreement": share(sum((r["preference"] > 0.5) == (r["oracle"] > 0.5)
                                      for r in decided), len(decided)),
        "n_oracle_decided": len(decided),
        "oracle_mean_abs_diff": share(sum(abs(r["preference"] - r["oracle"])
                                          for r in with_oracle), len(with_oracle)),
        "flip_rate": share(sum(flips), len(flips)), "n_flip_checked": len(flips),
        "longer_win_share": share(sum(("candidate" if r["preference"] > 0.5 else "baseline")
                                      == r["longer"] for r in by_length), len(by_length)),
        "n_length_decided": len(by_length),
        "calls": sum(i["calls"] for i in spent) if spent else None,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "oracle_kappa": kappa, "oracle_kappa_3way": kappa3, "n_oracle_rated": len(with_oracle),
        "length_bias_coef": fit["coef"], "length_bias_se": fit["se"],
        "length_bias_ci": fit["ci"], "length_bias_p": fit["p"], "n_length_fit": fit["n"],
        "length_bias_note": fit["note"],
        "oracle_length_bias_coef": oracle_fit["coef"] if sized_o else None,
        "oracle_length_bias_se": oracle_fit["se"] if sized_o else None,
        "length_bias_excess": excess,
        **_self_preference(ok, self_note),
        "cost": judge_cost(prompt_tokens, completion_tokens, prices),
    }
    return finite_or_none(stats)


# ---------------------------------------------------------------------------- the report

def oracle_judge(task: Any) -> Any | None:
    """The task's oracle judge, or None for a task without one."""
    from evaluators.judges import JUDGES

    try:
        return JUDGES.get("oracle")(task)
    except Exception:
        return None


def _own_side(judge_id: str | None, baseline: dict | None, candidate: dict | None) -> str | None:
    """Which side of a pair is the judge's own model: 'candidate', 'baseline' or None.

    A side whose identity is the judge's matches more closely (2) than one merely tuned from
    it (base identity, 1); a pair whose two sides match equally (say an SFT baseline and a
    DPO candidate both tuned from the judge's model) says nothing about self-preference.
    """
    def closeness(m: dict | None) -> int:
        if judge_id is None or not m:
            return 0
        if m.get("identity") == judge_id:
            return 2
        return 1 if m.get("base_identity") == judge_id else 0

    b, c = closeness(baseline), closeness(candidate)
    return None if b == c else "candidate" if c > b else "baseline"


def _rows(judged: list[Judged], oracle_p: Any) -> list[dict[str, Any]]:
    rows = []
    for i, j in enumerate(judged):
        b, c, s = j.baseline, j.candidate, j.row
        rows.append({"status": s["status"] if s else None,
                     "preference": s["preference"] if s else None,
                     "info": (s["info"] or {}) if s else {}, "oracle": oracle_p(j),
                     "longer": longer(b["text"], c["text"]), "prompt_id": c["prompt_id"],
                     "length_diff": (normalized_length_diff(b["text"], c["text"])
                                     if b["text"] != c["text"] else None),
                     # the same pair under every judge (judgment keys differ per judge)
                     "pair": (b["key"], c["key"]) if "key" in b and "key" in c else i})
    return rows


def write_judge_quality(results: list[ModelResults], judges: list[dict[str, Any]],
                        oracle: Any | None, experiment: str, results_dir: Path,
                        models: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write judge_quality.json and .md into results_dir; returns what was written.

    `judges`: one {"name", "display", "params", "fingerprint"} per judge of the spec, where
    `display` is the key of that judge's verdicts in each model's `judged`; optionally
    "model_identity" (str | None; default `judge_model_identity(fingerprint)`) and "prices"
    ({"prompt_per_1k", "completion_per_1k"} | None). `models`: label -> {"identity",
    "base_identity"} (`model_fingerprint` content hashes, None where unknown) of the
    candidates and, if it is a model, the baseline; without it there is no self-preference.
    """
    results_dir = Path(results_dir)
    base = next(m for m in results if m.is_baseline)
    candidates = [m for m in results if not m.is_baseline]
    cache: dict[tuple[str, str, str], float | None] = {}

    def oracle_p(j: Judged) -> float | None:
        prompt = j.candidate["prompt"]  # text or messages: cached by its content
        key = (canonical_json(prompt), j.baseline["text"], j.candidate["text"])
        if oracle is not None and key not in cache:
            try:  # a task without rewards for these prompts (e.g. user data) has no oracle
                cache[key] = oracle.judge(prompt, [key[1]], [key[2]])[0]
            except Exception:
                cache[key] = None
        return cache.get(key)

    by_judge = [{m.label: _rows(m.judged.get(j["display"], []), oracle_p) for m in candidates}
                for j in judges]
    idents = [j["model_identity"] if "model_identity" in j
              else judge_model_identity(j["fingerprint"]) for j in judges]
    # every ok verdict per (model, pair), for the no-oracle self-preference reference
    verdicts = [{(label, r["pair"]): r["preference"] for label, rs in bm.items() for r in rs
                 if r["status"] == "ok" and r["preference"] is not None} for bm in by_judge]
    out = []
    for k, (j, bm, ident) in enumerate(zip(judges, by_judge, idents)):
        note = ("the judge has no model identity (not an LLM or reward-model judge)"
                if ident is None else "no model identities given" if models is None else None)
        for label, rs in bm.items():
            for r in rs:
                r["own"] = _own_side(ident, (models or {}).get(base.label),
                                     (models or {}).get(label))
                # judges of another model only: one sharing this model would share its bias
                r["others"] = [v[(label, r["pair"])] for i, v in enumerate(verdicts)
                               if i != k and idents[i] != ident and (label, r["pair"]) in v]
        prices = j.get("prices")
        fp = j["fingerprint"]
        out.append({"name": j["name"], "params": j["params"],
                    # an LLM judge's protocol (alpaca_eval_2, mt_bench_pair, ...), None if ours
                    "protocol": fp.get("protocol") if isinstance(fp, dict) else None,
                    "fingerprint": content_hash(fp), "model_identity": ident,
                    "prices": (None if prices is None else
                               {key: _price(prices, key)
                                for key in ("prompt_per_1k", "completion_per_1k")}),
                    "overall": judge_quality_stats([r for rs in bm.values() for r in rs],
                                                   prices, note),
                    "by_model": {label: judge_quality_stats(rs, prices, note)
                                 for label, rs in bm.items()}})
    report = finite_or_none({"experiment": experiment, "baseline": base.label,
                             "oracle": oracle.fingerprint if oracle is not None else None,
                             "models": models, "judges": out})
    write_text_atomic(results_dir / "judge_quality.json", dumps(report, indent=2, default=str))
    write_text_atomic(results_dir / "judge_quality.md", _markdown(report))
    return report


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


EXPLAIN = [
    "oracle_agreement: share of pairs where judge and oracle prefer the same answer (ties "
    "excluded); oracle_mean_abs_diff: mean |P - P_oracle|; flip_rate: share of both-order "
    "judgments whose verdict changed with the order; longer_win_share: share of decided "
    "judgments won by the longer answer (words); calls and tokens: what the judge spent.",
    "- oracle_kappa: Cohen's kappa with the oracle on the pairs both decided (candidate vs "
    "baseline wins): agreement beyond what chance gives two raters with these verdict rates "
    "(1 perfect, 0 chance).",
    "- oracle_kappa_3way: the same with ties as a third, middle verdict (linear weights: a tie "
    "against a win is half a disagreement); equal to oracle_kappa when nobody ties.",
    "- length_bias_coef: slope of a logistic regression of the judge's (soft) preference on "
    "(len_candidate - len_baseline) / (len_candidate + len_baseline) in characters, in "
    "log-odds per unit (0: length does not matter; identical answers left out).",
    "- length_bias_se, length_bias_p: its standard error (binomial Fisher information; the "
    "95% interval is in the JSON) and two-sided Wald p-value.",
    "- length_bias_excess: the judge's slope minus the oracle's on the same pairs, since on "
    "some tasks longer answers really are better: the length bias beyond the oracle's.",
    "- self_preference: where the judge's model is one of the compared models (or their base), "
    "its win rate for its own model minus the oracle's on the same pairs (without an oracle: "
    "minus the other judges' mean), as a fraction (0.1 = 10 points).",
    "- cost: prompt_tokens/1000 x prompt_per_1k + completion_tokens/1000 x completion_per_1k, "
    "in the currency the spec's prices are in (– without prices or token counts).",
]


def _markdown(report: dict[str, Any]) -> str:
    head = "| judge | " + " | ".join(COLUMNS) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 1)
    lines = [f"# Judge quality: {report['experiment']}", "",
             f"Each judge over the pairs (baseline `{report['baseline']}` sample i, model sample "
             f"i). {EXPLAIN[0]}", "", *EXPLAIN[1:], "", head, rule]
    for j in report["judges"]:
        name = f"{j['name']} {json.dumps(j['params'], sort_keys=True)}" if j["params"] \
            else j["name"]
        if j.get("protocol") and j["params"].get("protocol") != j["protocol"]:
            name += f" (protocol {j['protocol']})"
        lines.append(f"| {name} | " + " | ".join(_fmt(j["overall"][c]) for c in COLUMNS) + " |")
    for j in report["judges"]:
        protocol = f", protocol {j['protocol']}" if j.get("protocol") else ""
        lines += ["", f"## {j['name']} ({j['fingerprint']}{protocol}) by model", "",
                  head.replace("| judge |", "| model |"), rule]
        for label, stats in j["by_model"].items():
            lines.append(f"| {label} | " + " | ".join(_fmt(stats[c]) for c in COLUMNS) + " |")
        notes = {k: j["overall"][k] for k in ("length_bias_note", "self_preference_note")
                 if j["overall"].get(k)}
        if notes:
            lines += [""] + [f"- {k.removesuffix('_note')}: {v}" for k, v in notes.items()]
    return "\n".join(lines) + "\n"
