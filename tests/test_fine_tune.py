"""FINE_TUNE=1: backbone in the graph, only its top layers trainable; the run predicts."""
import json
from pathlib import Path

import numpy as np

from conftest import base_args


def test_fine_tune_trains_top_layers_and_predicts(prepared, tiny_model, cli):
    code, out, err = cli("train", *base_args(tiny_model, num_images=48, num_epochs=30),
                         "--fine-tune=1", "--fine-tune-layers=1", "--fine-tune-learning-rate=0.005")
    assert code == 0, err
    assert "the top 1 backbone layers (2 variables) are trainable" in out
    run = Path("runs", Path("runs/LATEST").read_text().strip())
    assert (run / "model.weights.h5").is_file() and not (run / "head.keras").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mode"] == "fine-tune" and metrics["val_accuracy"] >= 0.8

    from dogvision.config import Config
    from dogvision.predict import load_run, predict_paths
    loaded = load_run(run, Config())
    probs = predict_paths(loaded, sorted(str(p) for p in Path("data/dog-breed-identification/test").glob("*.jpg")))
    assert probs.shape == (12, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    backbone = loaded._model.get_layer("backbone")
    tiny = __import__("tensorflow").saved_model.load(str(tiny_model))
    original = {w.name: w.numpy() for w in tiny.variables}
    changed = {v.name.split(":")[0]: not np.allclose(v.numpy(), original[v.name]) for v in backbone.weights}
    assert changed == {"block1/conv/kernel": False, "block1/conv/bias": False,
                       "block2/conv/kernel": True, "block2/conv/bias": True}, changed
    code, out, err = cli("submission", *base_args(tiny_model))
    assert code == 0, err


def test_course_pipeline_end_to_end_frozen(prepared, tiny_model, cli):
    code, out, err = cli("train", *base_args(tiny_model, num_images=48), "--cache-features=0")
    assert code == 0, err
    metrics = json.loads(Path("runs", Path("runs/LATEST").read_text().strip(), "metrics.json").read_text())
    assert metrics["mode"] == "end to end (frozen backbone)" and metrics["val_accuracy"] >= 0.8
