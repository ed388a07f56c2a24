"""Nothing is lost: an interrupted training resumes from its checkpoint; runs are never
overwritten unless FORCE=1; every file the kit writes appears whole or not at all."""
import os
from pathlib import Path

import pandas as pd
import pytest

from conftest import base_args
from dogvision import fileio, train

INTERRUPT_AFTER = 3  # epochs


class Interrupt(train.keras.callbacks.Callback):
    """Ctrl-C after a few epochs (after BackupAndRestore has saved that epoch)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == INTERRUPT_AFTER:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_then_is_protected(project, tiny_model, cli, monkeypatch):
    args = base_args(tiny_model, num_images=48, patience=100, num_epochs=8)
    real_callbacks = train.callbacks
    monkeypatch.setattr(train, "callbacks", lambda *a, **k: real_callbacks(*a, **k) + [Interrupt()])
    code, out, err = cli("train", *args, "--run=r1")
    assert code == 130 and "continues with RESUME=1 RUN=<run>" in err
    run = Path("runs/r1")
    assert not (run / "metrics.json").exists() and any((run / "checkpoint").rglob("*"))
    assert Path("runs/LATEST").read_text() == "first\n"  # the earlier run is still the latest
    monkeypatch.setattr(train, "callbacks", real_callbacks)

    code, out, err = cli("train", *args, "--run=r1")
    assert code == 2 and "runs/r1/ is an unfinished run; it is not overwritten" in err and "RESUME=1" in err

    code, out, err = cli("train", *args, "--run=r1", "--resume=1")
    assert code == 0, err
    assert "RESUME=1: continuing runs/r1/ from its last checkpoint" in out
    assert f"Epoch {INTERRUPT_AFTER + 1}/8" in out and "Epoch 1/8" not in out
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(8))  # one row per epoch, before and after the interrupt
    assert (run / "metrics.json").is_file() and not (run / "checkpoint").exists()

    metrics = run / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    code, out, err = cli("train", *args, "--run=r1")
    assert code == 2 and "runs/r1/ is a finished run; it is not overwritten" in err
    assert metrics.stat().st_mtime_ns == stamp

    code, out, err = cli("train", *args, "--run=r1", "--force=1")
    assert code == 0 and "FORCE=1: replacing runs/r1/" in out
    assert metrics.stat().st_mtime_ns != stamp


def test_submission_is_not_overwritten_unless_forced(project, tiny_model, cli):
    csv = Path("submissions/first.csv")
    stamp, before = csv.stat().st_mtime_ns, csv.read_bytes()
    code, out, err = cli("submission", *base_args(tiny_model))
    assert code == 0 and "not overwritten" in out
    assert csv.stat().st_mtime_ns == stamp and csv.read_bytes() == before
    code, out, err = cli("submission", *base_args(tiny_model), "--force=1")
    assert code == 0 and f"Wrote {csv}" in out and csv.stat().st_mtime_ns != stamp


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["report.csv"]
