"""The pipeline: prepare -> train -> generate -> score -> judge -> report.

Each stage reads what the one before wrote from the store, computes only the units that
are missing, and writes each unit (or fixed batch of units) in one transaction. Counts of
computed and stored units per stage are printed and recorded in run.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.errors import InputError
from harness.executors import Executor, LocalExecutor, RunJob, Trained
from harness.hashing import code_version, content_hash, environment, seed_from
from harness.jsonio import write_json
from harness.lock import lock_results_dir
from harness.progress import eta_lines
from harness.secrets import redact
from harness.spec import ExperimentSpec, RunSpec, build_dataclass, expand_runs
from harness.store import Store, usable_results_dir
from harness.tasks import TASKS
from harness.tasks.base import Prompt, TaskAssets
from harness.units import Units

STAGES = ("prepare", "train", "generate", "score", "benchmark", "judge", "report")


@dataclasses.dataclass
class Model:
    label: str
    key: str            # content key: generations and scores hang off it
    path: Path          # Hugging Face folder
    run: RunSpec | None  # None for the SFT reference


class Experiment:
    def __init__(self, spec: ExperimentSpec, results_dir: str | Path | None = None,
                 show_progress: bool = True, executor: Executor | None = None) -> None:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # one bar per stage is enough
        transformers.utils.logging.set_verbosity_error()
        self.spec = spec
        self.results_dir = usable_results_dir(Path(results_dir or spec.output.results_dir
                                                   or Path("results") / spec.name))
        # One run per results folder at a time: a second one exits 1 naming the holder.
        lock_results_dir(self.results_dir)
        self.store = Store(self.results_dir)
        task_cls = TASKS.get(spec.task)
        self.task = task_cls(build_dataclass(task_cls.Options, spec.task_options,
                                             prefix="task_options"), self.store)
        self.runs = expand_runs(spec)
        self.show_progress = show_progress
        self.task.show_progress = show_progress
        # the preference dimensions in training order (harness/dimensions.py)
        from harness.dimensions import experiment_dimensions

        self.task.dimension_order = experiment_dimensions(self)
        # who trains the runs (`harness.executors`); this process alone writes the store
        self.executor = executor or LocalExecutor(show_progress)
        self.counts = {s: {"computed": 0, "cached": 0} for s in STAGES}
        self._assets: TaskAssets | None = None
        self._judges: list[Any] | None = None

    # ------------------------------------------------------------------ helpers

    def _count(self, stage: str, computed: bool, n: int = 1) -> None:
        self.counts[stage]["computed" if computed else "cached"] += n

    def _bar(self, iterable, **kw):
        if not self.show_progress:  # --quiet: an ETA line at most every 30 s
            return eta_lines(iterable, kw.get("desc", "progress"), kw.get("total"))
        return tqdm(iterable, **kw)

    @property
    def assets(self) -> TaskAssets:
        if self._assets is None:
            data = self._user_data()
            # the task samples no pairs of its own when the spec's data replaces them
            self.task.pairs_given = "train" in data
            assets = self.task.prepare(lambda unit, computed: self._count("prepare", computed))
            if "train" in data:
                assets.pairs = data["train"].rows
                self._train_where = data["train"].where  # so later checks can name a row
            if "eval_prompts" in data:
                assets.eval_prompts = [Prompt(r["id"], r["prompt"])
                                       for r in data["eval_prompts"].rows]
            if "reg_prompts" in data:
                assets.reg_prompts = [r["prompt"] for r in data["reg_prompts"].rows]
            self._check_prompts(assets)
            for slot, loaded in data.items():  # once, and only for a run that goes ahead
                note = loaded.unused_note(f"data.{slot}")
                if note:
                    logging.getLogger("spo_harness").warning(note)
            self._assets = assets
        return self._assets

    def _user_data(self) -> dict[str, Any]:
        """The spec's data slots, loaded and checked against the base model's chat
        template before the task prepares anything (`harness.data`)."""
        from harness.data import check_chat_rows, load_slot
        from harness.spec import DATA_SLOTS

        data = {slot: load_slot(slot, self.spec.data.source(slot), self.spec.data.dimensions)
                for slot in DATA_SLOTS if self.spec.data.source(slot) is not None}
        if self.spec.base_model != "tiny":
            from harness.base_models import load_tokenizer, resolve_base_model

            self.task.base_model_dir = resolve_base_model(self.spec.base_model)
            if any(d.conversational for d in data.values()):
                tok = load_tokenizer(self.task.base_model_dir)
                for loaded in data.values():
                    check_chat_rows(loaded, tok)
        return data

    def _check_prompts(self, assets: TaskAssets) -> None:
        """Every eval prompt is one distinct unit, and fits the model's context window.

        Generations are keyed by prompt text and paired by prompt id, so a repeated id or
        text would silently pair answers to different prompts. A prompt longer than the
        context would make generation allocate attention for all of it (a 1 MB prompt asked
        for 160 GB): refuse it here, before any training.
        """
        from harness.base_models import load_tokenizer
        from harness.data import check_prompt_identity
        from trainers.tokenize import encode_prompt

        d = {slot: self.spec.data.source(slot) for slot in ("eval_prompts", "reg_prompts")}
        source = (d["eval_prompts"].path if d["eval_prompts"]
                  else f"task '{self.spec.task}' eval prompts")
        check_prompt_identity([(p.id, p.text) for p in assets.eval_prompts], source)
        tok = load_tokenizer(assets.reference_dir)
        config = json.loads((Path(assets.reference_dir) / "config.json").read_text())
        limit = config.get("max_position_embeddings")
        if not limit:
            return
        for name, texts, file in (
                ("eval prompt", [(p.id, p.text) for p in assets.eval_prompts], source),
                ("regularization prompt", list(enumerate(assets.reg_prompts, 1)),
                 d["reg_prompts"].path if d["reg_prompts"]
                 else f"task '{self.spec.task}' regularization prompts")):
            for pid, text in texts:
                chars = (len(text) if isinstance(text, str)
                         else sum(len(m["content"]) for m in text))  # a conversation
                n = chars // 8 + 1  # a cheap lower bound first: BPE is ~4 chars a token
                if n > limit or len(encode_prompt(tok, text)) > limit:
                    n = len(encode_prompt(tok, text[: 16 * limit] if isinstance(text, str)
                                          else text))
                    raise InputError(f"{name} '{pid}' has {n}{'+' if n > limit else ''} "
                                     f"tokens; the model's context is {limit}", file=file)

    @property
    def units(self) -> Units:
        """The units the current spec names (prompts x samples at these sampling settings)."""
        g = self.spec.generation
        return Units(self.store, self.assets.eval_prompts, g.n_samples,
                     self.sampling().as_dict(), g.seed)

    def run_key(self, run: RunSpec) -> str:
        return content_hash({"reference": self.assets.reference_key,
                             "pairs": content_hash(self.assets.pairs),
                             "reg_prompts": content_hash(self.assets.reg_prompts),
                             "run": run.key_material(),
                             "training": self.spec.training.key()})

    def models(self, require_trained: bool = True) -> list[Model]:
        a = self.assets
        models = [Model("sft", a.reference_key, Path(a.reference_dir), None)]
        for run in self.runs:
            key = self.run_key(run)
            stored = self.store.get_run(key)
            if stored is None:
                if require_trained:
                    raise InputError(f"run '{run.label}' is not trained yet: "
                                     "run `spo-harness train` (or `run`) first")
                continue
            from harness.sequential import round_models

            models += [m for m in round_models(self, run)  # SeqPO: its earlier rounds
                       if m.key not in {x.key for x in models}]  # a shared round: once
            models.append(Model(run.label, key, Path(stored["checkpoint"]), run))
        return models

    # ------------------------------------------------------------------ train

    def _reference_logps(self):
        import torch

        from trainers.loop import compute_reference_logps

        a, cut = self.assets, self.spec.training.truncation()
        if a.pairs and ("responses" in a.pairs[0]  # lists: only reference-free SPO uses them
                        or set(a.pairs[0]) == {"prompt"}):  # prompts alone: SPPO samples
            return torch.zeros(0), torch.zeros(0)
        key = content_hash({"ref-logps": a.reference_key, "pairs": content_hash(a.pairs),
                            "max_length": cut.key(), "eos": a.completion_eos})
        found = self.store.get_artifact(key)
        if found is not None:
            self._count("train", False)
            t = torch.load(found["path"] / "ref_logps.pt")
            return t["chosen"], t["rejected"]
        chosen, rejected = compute_reference_logps(a.reference_dir, a.pairs, cut,
                                                   a.completion_eos)
        staging = self.store.staging_dir("ref-logps", key)
        torch.save({"chosen": chosen, "rejected": rejected}, staging / "ref_logps.pt")
        self.store.commit_artifact("ref-logps", key, staging, {"n": len(a.pairs)})
        self._count("train", True)
        return chosen, rejected

    def train(self) -> None:
        """Compute what to train, let the executor train it, commit each finished run."""
        from trainers.losses import get_loss

        if self.assets.pairs and "responses" in self.assets.pairs[0]:
            for run in self.runs:
                if not hasattr(get_loss(run.method, **run.params), "list_loss"):
                    raise InputError(f"run '{run.label}': {run.method} takes pairs; ranked and "
                                     "best-of-n lists are supported by spo")
        todo = [r for r in self.runs if self.store.get_run(self.run_key(r)) is None]
        self._count("train", False, len(self.runs) - len(todo))
        if not todo:
            return
        # SPPO samples and judges between its trainings (sample -> judge -> train, repeated)
        iterative = [r for r in todo if getattr(get_loss(r.method, **r.params), "iterative",
                                                False)]
        if iterative and not self.executor.trains_iterative:
            raise InputError(f"run '{iterative[0].label}' ({iterative[0].method}) samples and "
                             "judges between its trainings: train it in one process, without "
                             "`accelerate launch`")
        # SeqPO trains one round per dimension, each from the stored round before it
        sequential = [r for r in todo if getattr(get_loss(r.method, **r.params), "sequential",
                                                 False)]
        if sequential and not self.executor.trains_iterative:
            raise InputError(f"run '{sequential[0].label}' ({sequential[0].method}) trains its "
                             "rounds in this process, each from the stored one before: train "
                             "it without `accelerate launch`")
        iterative += sequential
        from trainers.trackers import check_installed

        check_installed(self.spec.training.report_to)  # before any run trains: exit 2
        self._check_truncation()
        ref_logps = self._reference_logps()
        jobs = {job.key: job for job in (self._run_job(r, ref_logps) for r in todo
                                         if r not in iterative)}
        for trained in self.executor.train(list(jobs.values())):
            self._commit_run(jobs[trained.key], trained)
        for run in iterative:
            self._commit_run(*self._train_iterative(run, ref_logps))

    def _run_job(self, run: RunSpec, ref_logps) -> RunJob:
        from trainers.loop import TrainJob

        key, a = self.run_key(run), self.assets
        job = TrainJob(label=run.label, seed=run.seed, reference_dir=a.reference_dir,
                       pairs=a.pairs, reg_prompts=a.reg_prompts, training=self.spec.training,
                       work_dir=self.results_dir / "work" / f"run-{key}", ref_logps=ref_logps,
                       add_eos=a.completion_eos)
        if run.ssl is not None:  # Self-supervised PO: graded variants, stored once (harness/ssl.py)
            from harness.ssl import ssl_data

            job.ssl = ssl_data(self, run)
        return RunJob(run, key, job, self.store.staging_dir("checkpoint", key))

    def _train_iterative(self, run: RunSpec, ref_logps) -> tuple[RunJob, Trained]:
        """SPPO's (or SeqPO's) outer loop, in this process (it reads and writes the store as
        it goes)."""
        from harness.iterative import train_sppo
        from harness.sequential import train_seqpo
        from trainers.losses import get_loss

        job = self._run_job(run, ref_logps)
        t0 = time.time()
        loss = get_loss(run.method, **run.params)
        outer = train_seqpo if getattr(loss, "sequential", False) else train_sppo
        model, tok, history = outer(self, run, job.key, loss, self.show_progress)
        seconds = round(time.time() - t0, 2)
        model.save_pretrained(job.staging)
        tok.save_pretrained(job.staging)
        return job, Trained(job.key, history, seconds)

    def _commit_run(self, job: RunJob, trained: Trained) -> None:
        """Write the run's metadata beside its trained checkpoint and commit both."""
        run, key, a = job.run, job.key, self.assets
        metadata = {"label": run.label, "method": run.method, "params": run.params,
                    "seed": run.seed, "run_key": key, "reference": a.reference_key,
                    "data_hash": content_hash(a.pairs), "n_pairs": len(a.pairs),
                    "training": dataclasses.asdict(self.spec.training),
                    "code_version": code_version(), "train_seconds": trained.seconds,
                    "history": trained.history}
        if run.ssl is not None:
            metadata["ssl"] = run.ssl
        write_json(job.staging / "spo_harness_run.json", metadata)
        path = self.store.commit_artifact("checkpoint", key, job.staging, {"label": run.label})
        self.store.put_run(key, run.label, run.method, run.params, run.seed, str(path), metadata)
        shutil.rmtree(job.job.work_dir, ignore_errors=True)
        self._count("train", True)

    def _check_truncation(self) -> None:
        """With truncation_mode keep_start, a prompt that fills max_length leaves no
        completion token: TRL drops such rows, we refuse them before any training."""
        t = self.spec.training
        if t.truncation_mode != "keep_start":
            return
        from harness.base_models import load_tokenizer
        from trainers.tokenize import encode_prompt, truncate

        tok = load_tokenizer(self.assets.reference_dir)
        where = getattr(self, "_train_where", None)
        for i, row in enumerate(self.assets.pairs):
            try:
                truncate(encode_prompt(tok, row["prompt"]), [0], t.truncation())
            except ValueError as exc:
                if where is not None:
                    raise where[i].error(str(exc), "prompt") from None
                raise InputError(f"task '{self.spec.task}' training row {i + 1}: {exc}",
                                 field="training.truncation_mode") from None

    # ------------------------------------------------------------------ generate

    def sampling(self):
        from evaluators.generation import SamplingParams

        g = self.spec.generation
        return SamplingParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                              top_p=g.top_p)

    GAMED = ("concise", "verbose")

    def gamed_units(self, kind: str) -> Units:
        """The baseline's length-steered answers of AlpacaEval's LC regularization."""
        from evaluators.generation import length_steered

        g = self.spec.generation
        return Units(self.store, self.assets.eval_prompts, g.n_samples,
                     length_steered(self.sampling(), kind).as_dict(), g.seed)

    def generate(self) -> None:
        from evaluators.generation import length_steered

        jobs = [(model, self.units, self.sampling(), model.label) for model in self.models()]
        if self.spec.judging.gamed_baseline:
            base = self.baseline()
            jobs += [(base, self.gamed_units(kind), length_steered(self.sampling(), kind),
                      f"{base.label} ({kind})") for kind in self.GAMED]
        for model, units, params, desc in jobs:
            self._generate_model(model, units, params, desc)

    def _generate_model(self, model: Model, units: Units, params: Any, desc: str) -> None:
        from evaluators.generation import BACKENDS, resolve_backend

        g = self.spec.generation
        slots = units.slots(model.key)
        items = [(s.prompt, s.index) for s in slots]
        keys = [s.key for s in slots]
        done = self.store.existing_keys("generations", keys)
        batches = [range(s, min(s + g.batch_size, len(items)))
                   for s in range(0, len(items), g.batch_size)]
        todo = [b for b in batches if any(keys[j] not in done for j in b)]
        self._count("generate", False, len(done))
        if not todo:
            return
        backend = BACKENDS.get(resolve_backend(g.backend))(str(model.path), **g.options)
        try:
            for b in self._bar(todo, desc=f"generate {desc}", leave=False):
                requests = [(items[j][0].text, items[j][1]) for j in b]
                # per model, so that two models never share random numbers
                outs = backend.generate_batch(requests, params, seed_from(g.seed, model.key))
                new = [(j, o) for j, o in zip(b, outs) if keys[j] not in done]
                self.store.put_generations([
                    {"key": keys[j], "model_key": model.key, "prompt_id": items[j][0].id,
                     "sample_index": items[j][1], "prompt": items[j][0].text,
                     "text": o.text, "token_ids": o.token_ids,
                     "info": {"backend": g.backend, "finished": o.finished}}
                    for j, o in new])
                self._count("generate", True, len(new))
        finally:
            if hasattr(backend, "close"):  # vLLM's engine holds worker processes
                backend.close()

    # ------------------------------------------------------------------ score

    def scorers(self) -> list[Any]:
        """The spec's scorers, then each task dimension's true reward (`oracle.<name>`)."""
        from evaluators.scorers import SCORERS
        from harness.dimensions import dimension_scorers

        return ([SCORERS.get(s.name)(self.task, **s.params) for s in self.spec.scorers]
                + [scorer for _, scorer in dimension_scorers(self.task)])

    def score(self) -> None:
        from evaluators.scoring import exact_distributions, logp_scores, pointwise_scores

        models, units = self.models(), self.units
        embedder = None
        if self.spec.report.embedding_diversity:
            from evaluators.diversity import load_embedder, store_embeddings

            embedder = load_embedder()  # None (with a note) where the package is missing
        for model in self._bar(models, desc="score", leave=False):
            gens = units.generations(model.key)
            if embedder is not None:  # once per model's answers; the report reads them
                self._count("score", store_embeddings(self.store, embedder,
                                                      [g["text"] for g in gens]))
            for scorer in self.scorers():
                c, s = pointwise_scores(self.store, scorer, gens)
                self._count("score", True, c)
                self._count("score", False, s)
            for scoring_model in (model, models[0]):  # under the policy itself and the reference
                c, s = logp_scores(self.store, scoring_model.key, scoring_model.path, gens)
                self._count("score", True, c)
                self._count("score", False, s)
            if self.task.enumerable_responses(self.assets.eval_prompts[0].text) is not None:
                c, s = exact_distributions(self.store, self.task, model.key, model.path,
                                           self.assets.eval_prompts, self.assets.completion_eos)
                self._count("score", True, c)
                self._count("score", False, s)

    # ------------------------------------------------------------------ benchmark

    def benchmarks(self) -> list[Any]:
        """The spec's lm-eval benchmarks, their tasks found and checked (`benchmark_tasks`)."""
        from evaluators.benchmarks import Benchmark

        return [Benchmark.from_spec(b) for b in self.spec.benchmarks]

    def benchmark(self) -> None:
        """lm-eval on the reference and every checkpoint; one stored unit per (model, task)."""
        from evaluators.benchmarks import run_benchmarks

        if self.spec.benchmarks:
            c, s = run_benchmarks(self.store, self.models(), self.benchmarks(),
                                  self.spec.generation.backend, self.show_progress)
            self._count("benchmark", True, c)
            self._count("benchmark", False, s)

    # ------------------------------------------------------------------ judge

    def baseline(self) -> Model:
        for m in self.models():
            if m.label == self.spec.baseline:
                return m
        raise InputError(f"baseline '{self.spec.baseline}' is not a model of this experiment")

    def judges(self) -> list[Any]:
        """The spec's judges, built once (an LLM judge loads its model when built)."""
        from evaluators.judges import JUDGES

        if self._judges is None:
            self._judges = [JUDGES.get(j.name)(self.task, **j.params) for j in self.spec.judges]
        return self._judges

    def battle_plan(self, models: list[Model]) -> list[tuple[str, str]]:
        from harness.units import battle_plan

        pairs = self.spec.judging.pairs
        if isinstance(pairs, str):
            return battle_plan([m.label for m in models], self.spec.baseline, pairs)
        return battle_plan([m.label for m in models], self.spec.baseline, "anchors",
                           pairs.anchors)

    def judge(self) -> None:
        from evaluators.scoring import pairwise_judgments

        models, units = self.models(), self.units
        by_label = {m.label: m for m in models}
        gens = {m.label: units.generations(m.key) for m in models}
        work = [(units, gens[a], gens[b]) for a, b in self.battle_plan(models)]
        if self.spec.judging.gamed_baseline:
            base = self.baseline()
            work += [(units, gens[base.label],
                      self.gamed_units(kind).generations(by_label[base.label].key))
                     for kind in self.GAMED]
        judges = self.judges()  # built once: an LLM judge loads its model once
        for u, first, second in self._bar(work, desc="judge pairs", leave=False):
            for judge in judges:
                c, s = pairwise_judgments(u, judge, first, second)
                self._count("judge", True, c)
                self._count("judge", False, s)

    # ------------------------------------------------------------------ report

    def results(self) -> tuple[list[Any], dict[str, Any]]:
        """Every model's plain results and every judge's battles, read through `units`."""
        from evaluators.collect import collect, collect_battles, judge_names

        models, base, units = self.models(), self.baseline(), self.units
        judges = dict(zip(judge_names([j.display_name() for j in self.spec.judges]),
                          self.judges()))
        from harness.dimensions import dimension_scorers

        scorers = dict(zip(judge_names([s.name for s in self.spec.scorers])
                           + [name for name, _ in dimension_scorers(self.task)], self.scorers()))
        results = collect(units, models, base.key, models[0].key, scorers, judges, self.task,
                          self.assets.completion_eos)
        gens = {m.label: units.generations(m.key) for m in models}
        gamed = ({kind: self.gamed_units(kind).generations(base.key) for kind in self.GAMED}
                 if self.spec.judging.gamed_baseline else None)
        battles = collect_battles(units, gens, self.battle_plan(models), judges, gamed)
        return results, battles

    def report_settings(self) -> Any:
        from evaluators.collect import judge_names
        from evaluators.diversity import load_embedder, stored_embedder
        from evaluators.report import ReportSettings
        from harness.base_models import load_tokenizer

        r = self.spec.report
        embedder, embedders = None, {}
        if r.embedding_diversity:  # the score stage's vectors; the model only for what lacks them
            for m in self.models():
                found = stored_embedder(self.store, [g["text"] for g in
                                                     self.units.generations(m.key)])
                if found is not None:
                    embedders[m.label] = found
            if len(embedders) < len(self.models()):
                embedder = load_embedder()

        vocab = len(load_tokenizer(self.assets.reference_dir))
        names = judge_names([j.display_name() for j in self.spec.judges])
        scales = {n: float(j.fingerprint["scale"]) for n, j in zip(names, self.judges())
                  if j.fingerprint.get("judge") == "oracle-bt"}
        return ReportSettings(rounds=r.bootstrap_rounds, seed=r.bootstrap_seed,
                              style_control=r.style_control,
                              style_rounds=r.style_bootstrap_rounds, embedder=embedder,
                              embedders=embedders, vocab_size=vocab, oracle_scales=scales)

    def model_identities(self) -> dict[str, dict[str, str | None]]:
        """label -> content identity of the model and of the base it was tuned from.

        What judge quality compares with the judge model's identity to measure
        self-preference (a judge that is one of the candidates, or their base).
        """
        from harness.base_models import model_fingerprint

        base_dir = getattr(self.task, "base_model_dir", None)
        base = model_fingerprint(base_dir) if base_dir else None
        models = self.models()
        ref = model_fingerprint(models[0].path)
        # A trained checkpoint is identified by its run key: its folder also holds the run's
        # metadata (timings), so a file hash would differ between two identical trainings.
        return {m.label: {"identity": ref if m.run is None else f"run:{m.key}",
                          "base_identity": base or (None if m.run is None else ref)}
                for m in models}

    def report(self) -> list[dict[str, Any]]:
        from evaluators.collect import judge_names
        from evaluators.judge_quality import oracle_judge, write_judge_quality
        from evaluators.pareto import write_pareto
        from evaluators.report import leaderboard_records, write_leaderboard
        from evaluators.seeds import write_by_config
        from evaluators.softness import write_softness

        results, battles = self.results()
        settings = self.report_settings()
        records = leaderboard_records(results, battles, self.spec.report.primary_judge,
                                      settings)
        if self.spec.benchmarks:  # lm:<task>:<metric>, _stderr, _delta against the reference
            from evaluators.benchmarks import add_benchmark_columns, stored_results

            models = self.models()
            add_benchmark_columns(records, stored_results(
                self.store, models, self.benchmarks(), self.spec.generation.backend),
                reference=models[0].label)
        write_leaderboard(records, self.results_dir, self.spec.name)
        write_by_config(results, records, self.results_dir, settings)
        write_softness(records, self.results_dir)
        write_pareto(records, self.results_dir)
        names = judge_names([j.display_name() for j in self.spec.judges])
        judges = dict(zip(names, self.judges()))
        quality = write_judge_quality(results, [{"name": c.name, "display": n, "params": c.params,
                                       "fingerprint": judges[n].fingerprint,
                                       "prices": (dataclasses.asdict(c.prices)
                                                  if c.prices else None)}
                                      for c, n in zip(self.spec.judges, names)],
                            oracle_judge(self.task), self.spec.name, self.results_dir,
                            models=self.model_identities())
        self._html_report(records, results, quality, judges)
        self._count("report", True)
        return records

    def _html_report(self, records: list[dict[str, Any]], results: list[Any],
                     quality: dict[str, Any], judges: dict[str, Any]) -> None:
        """report.html (evaluators.html_report), and report.json: the baseline's key and
        the judges' fingerprints that `spo-harness leaderboard` merges folders by."""
        from evaluators.collect import judge_names
        from evaluators.html_report import PageInputs, write_html_report
        from evaluators.judge_quality import oracle_judge
        from evaluators.merge import write_identity

        base = self.baseline()
        fps = {n: content_hash(j.fingerprint) for n, j in judges.items()}
        scorers = dict(zip(judge_names([s.name for s in self.spec.scorers]), self.scorers()))
        write_identity(self.results_dir, self.spec.name, base.label, base.key,
                       records[0]["primary_judge"] if records else None, fps,
                       {n: content_hash(s.fingerprint) for n, s in scorers.items()},
                       {m.label: m.key for m in self.models()})
        histories = {}
        for m in self.models()[1:]:
            try:
                histories[m.label] = json.loads((m.path / "spo_harness_run.json").read_text())
            except (OSError, ValueError) as exc:  # an older or damaged checkpoint: say so
                histories[m.label] = {"note": f"no training history ({type(exc).__name__})"}
        run = {"code_version": code_version(), "environment": environment(),
               "spec": dataclasses.asdict(self.spec), "counts": self.counts,
               "runs": [{"label": r.label, "method": r.method, "params": r.params,
                         "seed": r.seed} for r in self.runs]}
        write_html_report(PageInputs(
            name=self.spec.name, records=records, results=results,
            prompts={p.id: p.text for p in self.assets.eval_prompts}, judges=fps,
            oracle=oracle_judge(self.task), judge_quality=quality, histories=histories,
            run=redact(run), max_prompts=self.spec.report.html_max_prompts), self.results_dir)

    def prepare(self) -> None:
        """Build the task: tiny model and tokenizer, SFT reference, pairs, prompts."""
        _ = self.assets

    def write_run_json(self, stages: list[str], seconds: float,
                       stage_seconds: dict[str, float]) -> None:
        info = {"experiment": self.spec.name, "stages": stages, "counts": self.counts,
                "seconds": round(seconds, 2), "stage_seconds": stage_seconds,
                "code_version": code_version(), "environment": environment(),
                "spec": dataclasses.asdict(self.spec),
                "runs": [{"label": r.label, "method": r.method, "params": r.params,
                          "seed": r.seed} for r in self.runs],
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(self.results_dir / "run.json", redact(info), default=str)
