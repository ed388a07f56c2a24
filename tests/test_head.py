"""Issue 3's machinery: feature cache, flip TTA, temperature scaling, FULL refit."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageOps
from scipy.special import softmax
from sklearn.metrics import log_loss

from conftest import IMAGE_SIZE, base_args, make_tiny_savedmodel, synthetic_photo
from dogvision.features import FeatureCache
from dogvision.train import fit_temperature, scale


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i, breed in enumerate(["akita", "beagle", "corgi"] * 3):
        path = tmp_path / f"p{i}.png"
        synthetic_photo(breed, rng).save(path)
        paths.append(str(path))
    return paths


def test_cache_reuses_same_backbone_and_size_only(tmp_path, photos, tiny_model):
    cache_dir = tmp_path / "cache"
    first = FeatureCache(cache_dir, str(tiny_model), IMAGE_SIZE)
    feats = first.get(photos)["orig"]
    assert first.computed == len(photos) and feats.shape == (len(photos), 16)

    again = FeatureCache(cache_dir, str(tiny_model), IMAGE_SIZE)  # a new process, same key
    np.testing.assert_array_equal(again.get(photos)["orig"], feats)
    assert again.computed == 0

    other_size = FeatureCache(cache_dir, str(tiny_model), IMAGE_SIZE + 8)
    other_size.get(photos)
    assert other_size.computed == len(photos)

    other_model = make_tiny_savedmodel(tmp_path / "other_backbone", seed=7)
    other = FeatureCache(cache_dir, str(other_model), IMAGE_SIZE)
    assert not np.allclose(other.get(photos)["orig"], feats)
    assert other.computed == len(photos)

    # An edited photo is recomputed; the others are not.
    ImageOps.mirror(synthetic_photo("akita", np.random.default_rng(9))).save(photos[0])
    edited = FeatureCache(cache_dir, str(tiny_model), IMAGE_SIZE)
    edited.get(photos)
    assert edited.computed == 1


def test_flip_view_is_the_mirrored_photo(tmp_path, photos, tiny_model):
    mirrored = []
    for i, path in enumerate(photos):
        out = tmp_path / f"m{i}.png"
        ImageOps.mirror(__import__("PIL.Image").Image.open(path)).save(out)
        mirrored.append(str(out))
    cache = FeatureCache(tmp_path / "cache", str(tiny_model), IMAGE_SIZE)
    views = cache.get(photos, ("orig", "flip"))
    mirror_views = cache.get(mirrored, ("orig",))
    np.testing.assert_allclose(views["flip"], mirror_views["orig"], atol=1e-5)
    assert not np.allclose(views["flip"], views["orig"], atol=1e-3)


def test_tta_prediction_averages_both_views(prepared, tiny_model, cli, tmp_path):
    from dogvision.predict import find_run, load_run, predict_paths
    from dogvision.config import Config

    assert cli("train", *base_args(tiny_model, num_images=48), "--tta=1")[0] == 0
    cfg = Config()
    run = load_run(find_run(cfg), cfg)
    assert run.metrics["tta"] is True
    photo = tmp_path / "x.png"
    mirror = tmp_path / "x_mirror.png"
    image = synthetic_photo("beagle", np.random.default_rng(3))
    image.save(photo)
    ImageOps.mirror(image).save(mirror)
    with_tta = predict_paths(run, [str(photo), str(mirror)])
    without = predict_paths(run, [str(photo), str(mirror)], tta=False)
    # Averaging a photo with its mirror makes the prediction mirror-invariant.
    np.testing.assert_allclose(np.log(with_tta[0]), np.log(with_tta[1]), atol=1e-3)
    assert not np.allclose(np.log(without[0]), np.log(without[1]), atol=1e-2)
    head = run._head
    cache = FeatureCache(cfg.cache_dir, run.config.model_handle, IMAGE_SIZE)
    views = cache.get([str(photo)], ("orig", "flip"))
    expected = head.predict((views["orig"] + views["flip"]) / 2, verbose=0)
    np.testing.assert_allclose(with_tta[:1], expected, rtol=1e-4, atol=1e-7)


def test_temperature_fixes_an_over_confident_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(2000, 10))
    y = np.array([rng.choice(10, p=p) for p in softmax(logits, axis=1)])
    over_confident = softmax(logits * 3, axis=1)  # the true temperature is 3
    t = fit_temperature(over_confident, y)
    assert 2.5 < t < 3.5
    before = log_loss(y, over_confident, labels=range(10))
    after = log_loss(y, scale(over_confident, t), labels=range(10))
    assert after < before * 0.8
    np.testing.assert_allclose(scale(over_confident, t), softmax(logits * 3 / t, axis=1), atol=1e-6)


def test_full_refits_on_every_photo_with_the_chosen_epochs(prepared, tiny_model, cli):
    code, out, err = cli("train", *base_args(tiny_model), "--full=1")
    assert code == 0, err
    name = Path("runs/LATEST_FULL").read_text().strip()
    metrics = json.loads(Path("runs", name, "metrics.json").read_text())
    assert metrics["full"] and metrics["num_labeled"] == 60
    assert metrics["num_train"] == 48 and metrics["num_val"] == 12  # the split the choices were made on
    assert f"Refitting the head on all 60 labeled photos for {metrics['best_epoch']} epochs" in out
    assert metrics["val_accuracy"] >= 0.8
    # A second run with other head settings reuses every cached feature.
    code, out, err = cli("train", *base_args(tiny_model, head_learning_rate=0.02), "--full=1")
    assert code == 0 and "Computing" not in out
    # FULL=1 submission uses the latest FULL run even when a subset run is newer.
    assert cli("train", *base_args(tiny_model, num_images=30))[0] == 0
    code, out, err = cli("submission", *base_args(tiny_model), "--full=1")
    assert code == 0
    full_runs = [p.name for p in Path("runs").iterdir() if p.name.endswith("-full")]
    assert any(Path("submissions", f"{n}.csv").exists() for n in full_runs)


def test_head_on_cached_features_ignores_the_features_scale():
    """The head sees unit-length features: a photo's overall activation level is not a breed."""
    from types import SimpleNamespace

    from dogvision import model

    cfg = SimpleNamespace(dropout=0.2, seed=0, l2=3e-5, learning_rate=0.01)
    head = model.build_head(16, 3, cfg, normalize=True)
    x = np.random.default_rng(0).random((4, 16)).astype("float32")
    np.testing.assert_allclose(head.predict(x, verbose=0), head.predict(5 * x, verbose=0), atol=1e-6)
    plain = model.build_head(16, 3, cfg)
    assert not np.allclose(plain.predict(x, verbose=0), plain.predict(5 * x, verbose=0), atol=1e-3)
