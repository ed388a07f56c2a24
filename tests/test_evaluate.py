"""`evaluate` on a tiny real run: the numbers match training's, the report files exist."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import BREEDS, base_args
from dogvision.evaluate import confused_pairs, per_breed_accuracy

REPORT_PNGS = ("curves.png", "per_breed.png", "confused.png", "worst.png")


def test_evaluate_writes_the_report(project, tiny_model, cli):
    code, out, err = cli("evaluate", *base_args(tiny_model))
    assert code == 0, err
    report = Path("runs/first/report")
    for name in REPORT_PNGS:
        path = report / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as image:
            assert min(image.size) > 100, name
    page = (report / "index.md").read_text()
    for name in REPORT_PNGS:
        assert f"]({name})" in page
    assert "FULL run" not in page
    metrics = json.loads((report / "metrics.json").read_text())
    trained = json.loads(Path("runs/first/metrics.json").read_text())
    # The rebuilt split is the one training used: same photos, same numbers.
    assert metrics["photos"] == trained["num_val"] == 10
    assert metrics["accuracy"] == trained["val_accuracy"]
    assert abs(metrics["log_loss"] - trained["val_log_loss"]) < 1e-3
    assert metrics["top_k"] == len(BREEDS) and metrics["top_k_accuracy"] == 1.0  # top-3 of 3 breeds
    assert f"Run first, 10 validation photos: accuracy {metrics['accuracy']:.3f}" in out
    assert "Report: runs/first/report/index.md" in out
    assert not list(report.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_evaluate_says_when_a_full_run_was_refit_on_its_validation_photos(project, tiny_model, cli):
    config = Path("runs/first/config.json")
    config.write_text(config.read_text().replace('"full": false', '"full": true'))
    code, out, err = cli("evaluate", *base_args(tiny_model), "--run=first")
    assert code == 0, err
    assert "FULL run: refit on these photos, so optimistic" in out
    assert "**FULL run:**" in Path("runs/first/report/index.md").read_text()


def test_evaluate_without_a_run_says_what_to_do(prepared, tiny_model, cli):
    code, out, err = cli("evaluate", *base_args(tiny_model))
    assert code == 2 and "No finished run in runs/: train one first" in err


def test_per_breed_and_confused_pairs():
    breeds = ["akita", "beagle", "corgi"]
    y = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 2, 2, 1, 2])  # akita->beagle once, beagle->corgi twice
    probs = np.eye(3)[predicted] * 0.9 + 0.1 / 3
    table = per_breed_accuracy(probs, y, breeds)
    assert list(table["breed"]) == ["beagle", "akita", "corgi"]
    np.testing.assert_allclose(table["accuracy"], [1 / 3, 1 / 2, 1])
    assert list(table["photos"]) == [3, 2, 1]
    pairs = confused_pairs(probs, y, breeds)
    assert [tuple(r) for r in pairs.itertuples(index=False)] == [("beagle", "corgi", 2), ("akita", "beagle", 1)]


def test_make_evaluate_and_make_predict(project, tiny_model):
    from test_make import make

    settings = dict(MODEL_HANDLE=tiny_model, NUM_BREEDS=len(BREEDS), IMAGE_SIZE=32)
    photo = Path("photo.png")
    Image.new("RGB", (40, 30), (200, 60, 50)).save(photo)  # akita's colour
    done = make("predict", project, PHOTOS=f"{photo} missing.jpg", TOP=2, **settings)
    assert done.returncode == 0, done.stderr
    assert "cannot read missing.jpg" in done.stderr and "1. akita" in done.stdout
    done = make("evaluate", project, RUN="first", **settings)
    assert done.returncode == 0, done.stderr
    assert Path("runs/first/report/worst.png").stat().st_size > 0
    assert "evaluate" in make("help", project).stdout
