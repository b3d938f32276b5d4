"""One leaderboard across experiments: `spo-harness leaderboard DIR [DIR ...] [--out DIR]`.

Win rates and ratings are only comparable when they were measured against the same
baseline by the same judge, so every results folder's report stage writes `report.json`:
the baseline's label and model content key, and each judge's and scorer's fingerprint
hash. Folders merge when their baselines have one key and their primary judges one
fingerprint; otherwise the command exits 2 with one line saying which folder differs in
what. Another judge's (or scorer's) prefixed columns are kept only where every folder has
that judge with the same fingerprint; the others are dropped and named in the output.

The merged records are leaderboard.json's, with `experiment` and `results_dir` added. A
model that several folders hold (one model content key: the baseline always, and any run two
experiments share) appears once, with the numbers of the first folder that has it and every
experiment that holds it listed in `experiment`; report.json maps each label to its key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.jsonio import dumps, write_json, write_text_atomic

IDENTITY = "report.json"
FORMAT = 1


def write_identity(out_dir: Path, experiment: str, baseline: str, baseline_key: str,
                   primary: str | None, judges: dict[str, str],
                   scorers: dict[str, str], models: dict[str, str]) -> None:
    """report.json: what the leaderboard's numbers are measured against, and each
    leaderboard label's model content key (how folders that share a model merge it)."""
    write_json(Path(out_dir) / IDENTITY, {
        "format": FORMAT, "experiment": experiment,
        "baseline": {"label": baseline, "key": baseline_key},
        "primary_judge": primary, "judges": judges, "scorers": scorers, "models": models})


def _read_json(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        hint = ("run `spo-harness report` on that experiment (report.json is written by the "
                "report stage)")
        raise InputError(f"missing; {hint}", file=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"not readable JSON ({' '.join(str(exc).split())})",
                         file=str(path)) from None


def read_folder(folder: str | Path) -> dict[str, Any]:
    """A results folder's leaderboard records and identity, checked for shape."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such results folder", file=str(folder))
    records = _read_json(folder, "leaderboard.json")
    if (not isinstance(records, list) or not records
            or not all(isinstance(r, dict) and isinstance(r.get("label"), str)
                       and isinstance(r.get("is_baseline"), bool) for r in records)):
        raise InputError("expected a non-empty list of records, each with a label and "
                         "is_baseline", file=str(folder / "leaderboard.json"))
    if sum(r["is_baseline"] for r in records) != 1:
        raise InputError("expected exactly one baseline record",
                         file=str(folder / "leaderboard.json"))
    ident = _read_json(folder, IDENTITY)
    ok = (isinstance(ident, dict) and isinstance(ident.get("experiment"), str)
          and isinstance(ident.get("baseline"), dict)
          and isinstance(ident["baseline"].get("key"), str)
          and isinstance(ident.get("judges"), dict) and isinstance(ident.get("scorers"), dict)
          and (ident.get("primary_judge") is None
               or ident.get("primary_judge") in ident["judges"])
          and isinstance(ident.get("models", {}), dict)
          and all(isinstance(k, str) for k in ident.get("models", {}).values()))
    if not ok:
        raise InputError("expected {experiment, baseline: {label, key}, primary_judge, "
                         "judges, scorers, models}", file=str(folder / IDENTITY))
    return {"folder": folder, "records": records, "identity": ident}


def check_compatible(folders: list[dict[str, Any]]) -> None:
    """Exit-2 errors naming the first folder whose baseline or primary judge differs."""
    first = folders[0]
    a = first["identity"]
    for f in folders[1:]:
        b = f["identity"]
        if b["baseline"]["key"] != a["baseline"]["key"]:
            raise InputError(
                f"baseline '{b['baseline'].get('label')}' (model key {b['baseline']['key']}) "
                f"differs from {first['folder']}'s '{a['baseline'].get('label')}' (model key "
                f"{a['baseline']['key']}): win rates against different baselines do not "
                "compare", file=str(f["folder"]))
        fa = a["judges"].get(a["primary_judge"]) if a["primary_judge"] else None
        fb = b["judges"].get(b["primary_judge"]) if b["primary_judge"] else None
        if fa != fb:
            raise InputError(
                f"primary judge '{b['primary_judge']}' (fingerprint {fb}) differs from "
                f"{first['folder']}'s '{a['primary_judge']}' (fingerprint {fa}): verdicts of "
                "different judges do not compare", file=str(f["folder"]))


def _shared(folders: list[dict[str, Any]], kind: str) -> tuple[set[str], list[str]]:
    """(names of `kind` with one fingerprint in every folder, names dropped)."""
    names = {n for f in folders for n in f["identity"][kind]}
    keep = {n for n in names if len({f["identity"][kind].get(n) for f in folders}) == 1
            and all(n in f["identity"][kind] for f in folders)}
    return keep, sorted(names - keep)


def merge(folders: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The merged records and notes on what was dropped."""
    check_compatible(folders)
    judges, dropped_j = _shared(folders, "judges")
    scorers, dropped_s = _shared(folders, "scorers")
    first_scorers = {next(iter(f["identity"]["scorers"].values()), None) for f in folders}
    names = [f["identity"]["experiment"] for f in folders]
    out, notes, seen, merged = [], [], {}, []
    for k, f in enumerate(folders):
        experiment = names[k] if names.count(names[k]) == 1 else f"{names[k]} ({f['folder']})"
        keys = dict(f["identity"].get("models", {}))
        keys[f["identity"]["baseline"]["label"]] = f["identity"]["baseline"]["key"]
        for r in f["records"]:
            key = keys.get(r["label"])
            if key is not None and key in seen:  # one model: keep the first folder's row
                first = seen[key]
                first["experiment"] += f"; {experiment}"
                if not r["is_baseline"]:
                    merged.append(f"{r['label']} [{experiment}] = {first['label']}")
                continue
            rec = {name: v for name, v in r.items()
                   if ":" not in name or name.split(":")[0] in judges | scorers}
            if len(first_scorers) > 1:  # the flat reward is the first scorer's: not shared
                rec = {n: v for n, v in rec.items() if not n.startswith("mean_reward")}
            rec = {**rec, "experiment": experiment, "results_dir": str(f["folder"])}
            out.append(rec)
            if key is not None:
                seen[key] = rec
    if merged:
        notes.append("the same model (one content key) in several folders, shown once with "
                     "the first folder's numbers: " + ", ".join(merged))
    if dropped_j:
        notes.append("columns dropped, the judge differs between folders: "
                     + ", ".join(dropped_j))
    if dropped_s:
        notes.append("columns dropped, the scorer differs between folders: "
                     + ", ".join(dropped_s))
    if len(first_scorers) > 1:
        notes.append("mean_reward dropped: the folders' first scorers differ")
    notes.append("each folder's intervals and Bradley-Terry ratings come from its own "
                 "prompts and its own fit (anchored at the shared baseline = 1000)")
    return out, notes


def write_merged(paths: list[str | Path], out_dir: str | Path) -> Path:
    """Read, check and merge the folders; write leaderboard.{md,csv,json,html} to out_dir."""
    import pandas as pd

    from evaluators.html_report import PageInputs, write_html_report
    from evaluators.report import _markdown, columns, sort_key

    resolved = [Path(p).resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise InputError("given twice", file=str(paths[i]))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out is a file, not a folder", file=str(out_dir))
    if out_dir.resolve() in resolved:
        raise InputError("--out is one of the folders merged; choose another",
                         file=str(out_dir))
    if (out_dir / "store.sqlite").exists():
        raise InputError("is an experiment's results folder (it holds store.sqlite); choose "
                         "another --out", file=str(out_dir))
    folders = [read_folder(p) for p in paths]
    records, notes = merge(folders)
    records.sort(key=sort_key)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["experiment", "results_dir"] + columns(records)
    write_text_atomic(out_dir / "leaderboard.json",
                      dumps([{c: r.get(c) for c in cols} for r in records], indent=2))
    frame = pd.DataFrame([{**r, "params": json.dumps(r.get("params"), sort_keys=True)}
                          for r in records], columns=cols)
    write_text_atomic(out_dir / "leaderboard.csv", frame.to_csv(index=False))
    title = "merged: " + ", ".join(dict.fromkeys(f["identity"]["experiment"] for f in folders))
    shown = [{**r, "label": f"{r['label']} [{r['experiment']}]"} for r in records]
    md = _markdown(shown, title) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    write_text_atomic(out_dir / "leaderboard.md", md)
    sources = [{"experiment": f["identity"]["experiment"], "folder": str(f["folder"]),
                "baseline": f"{f['identity']['baseline'].get('label')} "
                            f"({f['identity']['baseline']['key']})",
                "judge": f"{f['identity']['primary_judge']} "
                         f"({f['identity']['judges'].get(f['identity']['primary_judge'])})",
                "models": len(f["records"]), "notes": notes} for f in folders]
    write_html_report(PageInputs(name=title, records=records, sources=sources), out_dir,
                      "leaderboard.html")
    return out_dir
