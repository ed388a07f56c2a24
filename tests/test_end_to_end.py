"""The chain a user runs: data -> train -> submission -> validate, through the CLI."""
import json
from pathlib import Path

import pandas as pd

from conftest import BREEDS, base_args


def test_data_train_submission_chain(prepared, tiny_model, cli):
    code, out, err = cli("train", *base_args(tiny_model, num_images=48))
    assert code == 0, err
    run = Path("runs", Path("runs/LATEST").read_text().strip())
    for name in ("config.json", "breeds.txt", "metrics.json", "head.keras", "history.csv", "curves.png"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs"
    metrics = json.loads((run / "metrics.json").read_text())
    # 3 separable synthetic breeds: chance is 1/3.
    assert metrics["val_accuracy"] >= 0.8, metrics
    assert metrics["num_train"] + metrics["num_val"] == 48 and metrics["num_val"] == 10
    assert (run / "breeds.txt").read_text().split() == sorted(BREEDS)
    assert json.loads((run / "config.json").read_text())["num_images"] == 48

    code, out, err = cli("submission", *base_args(tiny_model))
    assert code == 0, err
    csv = Path("submissions", f"{run.name}.csv")
    frame = pd.read_csv(csv)
    sample = pd.read_csv("data/dog-breed-identification/sample_submission.csv")
    assert list(frame.columns) == list(sample.columns)
    assert list(frame["id"]) == list(sample["id"])
    assert ((frame.iloc[:, 1:].sum(axis=1) - 1).abs() < 1e-3).all()
    code, out, err = cli("validate", csv)
    assert code == 0 and "is a valid submission" in out

    # A second submission never overwrites the first.
    before = csv.read_bytes()
    csv.write_text(csv.read_text())  # same content, new mtime
    mtime = csv.stat().st_mtime_ns
    code, out, err = cli("submission", *base_args(tiny_model))
    assert code == 0 and "not overwritten" in out
    assert csv.stat().st_mtime_ns == mtime and csv.read_bytes() == before
