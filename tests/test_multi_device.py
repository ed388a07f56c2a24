"""Several devices: MirroredStrategy over two logical CPU devices, trained for real through the CLI.

Logical devices must be configured before TensorFlow starts, and other tests have
started it in this process, so `train` runs in a fresh `python -m dogvision` with
DOGVISION_DEVICES=/cpu:0,/cpu:1 (model.get_strategy splits the CPU in two).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, base_args


def train_in_subprocess(tiny_model, devices, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), DOGVISION_DEVICES=devices)
    proc = subprocess.run([sys.executable, "-m", "dogvision", "train", *base_args(tiny_model, num_images=48), *extra],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_head_trains_on_two_logical_cpus(prepared, tiny_model, cli):
    out = train_in_subprocess(tiny_model, "/cpu:0,/cpu:1", "--run=mirrored")
    # batch_size 8 per replica, 2 replicas
    assert "MirroredStrategy over 2 devices, global batch 16" in out, out
    metrics = json.loads(Path("runs/mirrored/metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.8, metrics  # 3 synthetic breeds: chance is 1/3
    # The head trained under the strategy is an ordinary saved model: predicting needs no strategy.
    code, out, err = cli("submission", *base_args(tiny_model), "--run=mirrored")
    assert code == 0, err
    assert Path("submissions/mirrored.csv").is_file()


def test_end_to_end_trains_on_two_logical_cpus(prepared, tiny_model):
    out = train_in_subprocess(tiny_model, "/cpu:0,/cpu:1", "--run=mirrored-e2e", "--cache-features=0",
                              "--num-epochs=15")
    assert "MirroredStrategy over 2 devices, global batch 16" in out, out
    metrics = json.loads(Path("runs/mirrored-e2e/metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.8, metrics


def test_one_device_uses_the_default_strategy(prepared, tiny_model):
    out = train_in_subprocess(tiny_model, "", "--run=single")
    assert "MirroredStrategy" not in out
    assert json.loads(Path("runs/single/metrics.json").read_text())["val_accuracy"] >= 0.8


def test_mixed_precision_only_on_gpus_with_tensor_cores(monkeypatch, tiny_model):
    """GPUs are faked: float16 compute on compute capability >= 7.0 only; softmax and backbone stay float32."""
    from types import SimpleNamespace

    from dogvision import model
    tf = model.tf
    capability = {}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0", "gpu1"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: {"compute_capability": capability[gpu]})
    try:
        capability.update(gpu0=(7, 5), gpu1=(6, 0))  # a P100 next to a T4: not everywhere safe
        assert model.use_mixed_precision() is False
        assert model.keras.mixed_precision.global_policy().name == "float32"
        capability.update(gpu1=(7, 5))
        assert model.use_mixed_precision() is True
        assert model.keras.mixed_precision.global_policy().name == "mixed_float16"
        cfg = SimpleNamespace(dropout=0.2, seed=0, l2=0.001, learning_rate=0.001)
        head = model.build_head(16, 3, cfg)
        assert head.layers[-1].compute_dtype == "float32"
        assert head(tf.zeros([2, 16])).dtype == tf.float32
        backbone = model.load_backbone(str(tiny_model))  # its SavedModel takes float32 only
        assert model.feature_size(backbone, 32) == 16
    finally:
        model.keras.mixed_precision.set_global_policy("float32")
