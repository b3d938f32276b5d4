"""`training.report_to`: the loop's log records reach TensorBoard (read back from the event
file), a missing library stops the run naming the pip command, and the setting never
enters a run's content key (it does not change the trained weights)."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import InputError, MissingDependencyError
from harness.spec import TrainingSpec, load_spec
from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer
from tests.conftest import TINY_BASE, one_torch_thread, write_spec
from trainers import trackers
from trainers.loop import TrainJob, compute_reference_logps, train
from trainers.losses import get_loss

WORDS = [f"w{i}" for i in range(16)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def test_report_to_is_not_part_of_the_run_key():
    plain = TrainingSpec().key()
    assert "report_to" not in plain
    assert TrainingSpec(report_to=["tensorboard", "wandb"]).key() == plain


def test_report_to_is_validated_at_load(tmp_path):
    ok = load_spec(write_spec(tmp_path / "a.yaml",
                              TINY_BASE.replace("  log_every: 3\n", "  log_every: 3\n"
                                                "  report_to: [tensorboard, mlflow]\n")))
    assert ok.training.report_to == ["tensorboard", "mlflow"]
    assert load_spec(write_spec(tmp_path / "b.yaml", TINY_BASE)).training.report_to == []
    bad = write_spec(tmp_path / "c.yaml", TINY_BASE.replace(
        "  log_every: 3\n", "  log_every: 3\n  report_to: [tensorbord]\n"))
    with pytest.raises(InputError) as exc:
        load_spec(bad)
    assert exc.value.field == "training.report_to.0" and "'tensorboard'" in str(exc.value)


def test_a_missing_library_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    trackers.check_installed(["tensorboard"])
    with pytest.raises(MissingDependencyError) as exc:
        trackers.check_installed(["tensorboard", "wandb"])
    assert "pip install wandb" in str(exc.value)
    assert exc.value.field == "training.report_to"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install tensorboard)")
def test_the_loop_logs_every_record_to_tensorboard(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rng = random.Random(0)
    tok = word_tokenizer(WORDS)
    ref = tmp_path / "ref"
    save_model(tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2, max_positions=16,
                          seed=0), tok, ref)
    pairs = [{"prompt": f"w{rng.randrange(16)} w{rng.randrange(16)}",
              "chosen": f" w{rng.randrange(16)}", "rejected": f" w{rng.randrange(16)}"}
             for _ in range(8)]
    cfg = TrainingSpec(epochs=2, batch_size=4, learning_rate=0.01, max_length=16,
                       save_every=100, log_every=1, kl_log_prompts=0,
                       report_to=["tensorboard"])
    results = tmp_path / "results"  # the loop's work folder is results/work/run-<key>
    job = TrainJob(label="dpo(beta=0.1)", seed=0, reference_dir=ref, pairs=pairs,
                   reg_prompts=[p["prompt"] for p in pairs], training=cfg,
                   work_dir=results / "work" / "run-x",
                   ref_logps=compute_reference_logps(ref, pairs, cfg.truncation()))
    _, _, history = train(job, get_loss("dpo", beta=0.1), show_progress=False)
    events = EventAccumulator(str(results / "tb" / "dpo_beta=0.1_"))
    events.Reload()
    assert len(history) == 4
    for key in ("loss", "rewards/margins", "entropy", "grad_norm"):
        logged = events.Scalars(f"train/{key}")
        assert [e.step for e in logged] == [h["step"] for h in history]
        assert [e.value for e in logged] == pytest.approx([h[key] for h in history], rel=1e-6)


MISSING = [n for n in ("trackio", "wandb", "mlflow") if importlib.util.find_spec(n) is None]


@pytest.mark.skipif(not MISSING, reason="every tracker library is installed")
def test_the_cli_refuses_a_missing_tracker_before_any_work(tmp_path):
    from tests.hostile.attack import refused

    spec = write_spec(tmp_path / "tiny.yaml", TINY_BASE)
    results = tmp_path / "r"
    refused("run", spec, "--results-dir", results, "--set",
            f"training.report_to=[{MISSING[0]}]", cwd=tmp_path, results=results,
            contains=("training.report_to", f"pip install {MISSING[0]}"))
    assert not (results / "store.sqlite").exists()
