"""`make bench`: its held-back photos never reach training, and it runs through to its table."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import BREEDS, REPO, base_args


def test_bench_data_holds_labels_back(prepared):
    from dogvision.bench import make_bench_data
    from dogvision.config import Config

    cfg = Config(num_breeds=len(BREEDS))
    held_in, held_back, breeds = make_bench_data(cfg, prepared / "bench" / "data")
    root = prepared / "bench" / "data"
    labels = pd.read_csv(root / "labels.csv")
    sample = pd.read_csv(root / "sample_submission.csv")
    secret = pd.read_csv(root.parent / "test_labels.csv")

    assert set(labels["id"]) == set(held_in["id"]) and not set(labels["id"]) & set(secret["id"])
    assert set(sample["id"]) == set(secret["id"]) == {p.stem for p in (root / "test").iterdir()}
    assert list(sample.columns) == ["id", *breeds]
    assert len(labels) + len(secret) == 3 * 20 and len(secret) == 15  # a quarter held back
    assert set(secret["breed"]) == set(BREEDS)  # stratified: every breed in both parts


def test_score_matches_sklearn_and_renormalises_rounded_rows():
    from sklearn.metrics import log_loss

    from dogvision.bench import score

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    frame = pd.DataFrame({"breed": ["akita", "corgi", "beagle"]})
    acc, loss = score(probs * 1.0000001, frame, list(BREEDS))
    assert acc == pytest.approx(2 / 3)
    assert loss == pytest.approx(log_loss([0, 2, 1], probs))


def test_bench_prints_its_table(prepared, tiny_model):
    args = [a for a in base_args(tiny_model) if not a.startswith(("--head", "--l2", "--dropout", "--patience",
                                                                   "--learning-rate", "--num-epochs"))]
    proc = subprocess.run([sys.executable, "-m", "dogvision", "bench", *args, "--num-images=24"],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (prepared / "runs" / "bench" / "bench.md").read_text()
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        ("1,000 photos", "ours"), ("1,000 photos", "course"),
        ("FULL + test", "ours"), ("FULL + test", "ours TTA=0"), ("FULL + test", "course")]
    full_ours = rows[2]
    test_loss, ratio = float(full_ours[9]), float(full_ours[10])
    course_loss = float(rows[4][9])
    assert ratio == pytest.approx(test_loss / course_loss, abs=0.01)
    assert float(full_ours[8]) > 0.6  # test accuracy on the separable synthetic breeds (chance 1/3)
    assert "Floor:" in table and float(full_ours[4]) > 0  # ours / floor filled in
