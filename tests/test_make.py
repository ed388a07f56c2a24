"""The commands a user types: `make submission` on a fresh folder, then again."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import BREEDS, IMAGE_SIZE, REPO


def make(target, workdir, **variables):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # The test's own interpreter stands in for .venv (STAMP= skips `make setup`).
    args = ["make", "-f", str(REPO / "Makefile"), target, f"VENV={sys.prefix}", "STAMP="]
    args += [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def test_make_submission_from_scratch_then_again(workdir, kaggle_zip, tiny_model):
    settings = dict(KAGGLE_ZIP=kaggle_zip, MODEL_HANDLE=tiny_model, NUM_BREEDS=len(BREEDS),
                    IMAGE_SIZE=IMAGE_SIZE, NUM_IMAGES=40, BATCH_SIZE=8, LEARNING_RATE=0.01, PATIENCE=5)
    first = make("submission", workdir, **settings)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Verified data/dog-breed-identification/: 60 labeled photos, 3 breeds, 12 test photos" in first.stdout
    assert "Epoch 1/100" in first.stdout
    csvs = list(Path(workdir, "submissions").glob("*.csv"))
    assert len(csvs) == 1
    frame = pd.read_csv(csvs[0])
    assert list(frame.columns) == ["id", *sorted(BREEDS)] and len(frame) == 12

    again = make("submission", workdir, **settings)
    assert again.returncode == 0, again.stderr
    assert "Epoch" not in again.stdout and "Computing" not in again.stdout  # nothing retrained or recomputed
    assert "already exists; it is not overwritten" in again.stdout

    valid = make("validate", workdir, CSV=csvs[0], NUM_BREEDS=3)
    assert valid.returncode == 0 and "is a valid submission" in valid.stdout


def test_make_help_lists_targets_and_variables(workdir):
    out = make("help", workdir).stdout
    for word in ("setup", "data", "train", "submission", "submit", "test", "FULL=1", "KAGGLE_ZIP", "MODEL_HANDLE"):
        assert word in out
