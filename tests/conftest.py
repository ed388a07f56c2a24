"""Test material made on the spot, so the suite needs no network and no ../shared.

- a Kaggle-layout zip of synthetic JPEGs: a few "breeds" a small model can tell
  apart (each a colour with noise and a random bar), with labels.csv and
  sample_submission.csv exactly as the competition ships them;
- a tiny SavedModel in TF Hub's reusable format (a small conv net with global
  pooling) that hub.KerasLayer loads like the real MobileNetV2.
"""
import io
import os
import sys
import uuid
import zipfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BREEDS = ("akita", "beagle", "corgi")
COLOURS = {"akita": (200, 60, 50), "beagle": (60, 170, 70), "corgi": (60, 80, 200)}
IMAGE_SIZE = 32


def synthetic_photo(breed, rng, size=(40, 30)):
    base = np.array(COLOURS[breed], dtype=float)
    pixels = base + rng.normal(0, 35, size=(size[1], size[0], 3))
    y = rng.integers(0, size[1] - 6)
    pixels[y:y + 6, :, :] = rng.integers(0, 255, size=3)  # a distractor bar of any colour
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg_bytes(image, fmt="JPEG"):
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def make_kaggle_zip(path, per_breed=20, test_per_breed=4, seed=0, breeds=BREEDS):
    """A zip laid out like `kaggle competitions download dog-breed-identification`."""
    rng = np.random.default_rng(seed)
    labels, test_ids, files = [], [], {}
    for breed in breeds:
        for _ in range(per_breed):
            photo_id = uuid.UUID(int=int(rng.integers(0, 2**63))).hex
            labels.append((photo_id, breed))
            files[f"train/{photo_id}.jpg"] = jpeg_bytes(synthetic_photo(breed, rng))
        for _ in range(test_per_breed):
            photo_id = uuid.UUID(int=int(rng.integers(0, 2**63))).hex
            test_ids.append(photo_id)
            files[f"test/{photo_id}.jpg"] = jpeg_bytes(synthetic_photo(breed, rng))
    columns = sorted(breeds)
    labels_csv = "id,breed\n" + "".join(f"{i},{b}\n" for i, b in labels)
    uniform = ",".join([f"{1 / len(columns):.8f}"] * len(columns))
    sample_csv = "id," + ",".join(columns) + "\n" + "".join(f"{i},{uniform}\n" for i in test_ids)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("labels.csv", labels_csv)
        zf.writestr("sample_submission.csv", sample_csv)
        for name, payload in files.items():
            zf.writestr(name, payload)
    return Path(path)


def make_tiny_savedmodel(path, seed=0, out_dim=16):
    """A TF Hub reusable SavedModel: images [B,H,W,3] in [0,1] -> features [B, out_dim]."""
    import tensorflow as tf

    class Tiny(tf.__internal__.tracking.AutoTrackable):
        def __init__(self):
            init = tf.random.stateless_normal
            self.conv1 = tf.Variable(init([3, 3, 3, 8], seed=[seed, 1]) * 0.5, name="block1/conv/kernel")
            self.bias1 = tf.Variable(tf.zeros([8]), name="block1/conv/bias")
            self.conv2 = tf.Variable(init([3, 3, 8, out_dim - 3], seed=[seed, 2]) * 0.3, name="block2/conv/kernel")
            self.bias2 = tf.Variable(tf.zeros([out_dim - 3]), name="block2/conv/bias")
            self.trainable_variables = [self.conv1, self.bias1, self.conv2, self.bias2]
            self.variables = list(self.trainable_variables)
            self.regularization_losses = []

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            x = tf.nn.relu(tf.nn.conv2d(images, self.conv1, 1, "SAME") + self.bias1)
            x = tf.nn.relu(tf.nn.conv2d(x, self.conv2, 2, "SAME") + self.bias2)
            pooled = tf.reduce_mean(x, axis=[1, 2])
            colour = tf.reduce_mean(images, axis=[1, 2])  # mean colour: what tells the breeds apart
            return tf.concat([pooled, colour * 4.0], axis=1)

    tf.saved_model.save(Tiny(), str(path))
    return Path(path)


@pytest.fixture(scope="session")
def kaggle_zip(tmp_path_factory):
    return make_kaggle_zip(tmp_path_factory.mktemp("kaggle") / "dog-breed-identification.zip")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_tiny_savedmodel(tmp_path_factory.mktemp("hub") / "tiny_backbone")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty project folder to run commands in; HOME is isolated from real Kaggle credentials."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def base_args(tiny_model, **overrides):
    """CLI options for a fast run on the synthetic data and tiny backbone."""
    values = {"num_breeds": len(BREEDS), "image_size": IMAGE_SIZE, "model_handle": str(tiny_model),
              "batch_size": 8, "num_epochs": 60, "patience": 5, "learning_rate": 0.01, "l2": 0, "dropout": 0,
              "head_batch_size": 8, "head_learning_rate": 0.05}
    values.update(overrides)
    return [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]


@pytest.fixture
def cli(capsys):
    """Run `python -m dogvision ...` in-process; returns (exit code, stdout, stderr)."""
    from dogvision.__main__ import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def prepared(workdir, kaggle_zip, tiny_model, cli):
    """A project folder whose data is unpacked and verified."""
    code, out, err = cli("data", f"--kaggle-zip={kaggle_zip}", *base_args(tiny_model))
    assert code == 0, err
    return workdir


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, kaggle_zip, tiny_model):
    """A project folder with verified data, one finished run and its submission, made once.

    Tests that only read it (predict, evaluate, refused bad input) copy it with `project`.
    """
    from dogvision.__main__ import main

    root = tmp_path_factory.mktemp("trained")
    old = os.getcwd()
    os.chdir(root)
    try:
        assert main(["data", f"--kaggle-zip={kaggle_zip}", *base_args(tiny_model)]) == 0
        assert main(["train", *base_args(tiny_model, num_images=48), "--run=first"]) == 0
        assert main(["submission", *base_args(tiny_model)]) == 0
    finally:
        os.chdir(old)
    return root


@pytest.fixture
def project(trained_project, workdir):
    """A private copy of trained_project (file times kept) as the current folder."""
    import shutil

    for item in trained_project.iterdir():
        copy = shutil.copytree if item.is_dir() else shutil.copy2
        copy(item, workdir / item.name)
    return workdir
