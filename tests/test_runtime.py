"""Backbone runtimes: TFLite (the CPU default) must give TensorFlow's features, be converted
once per backbone, and fall back to TensorFlow when it cannot take a model."""
import numpy as np
import pytest
from PIL import ImageOps

from conftest import IMAGE_SIZE, synthetic_photo
from dogvision import UserError, features
from dogvision.features import FeatureCache, LiteEmbedder, TFEmbedder


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(4)
    paths = []
    for i, breed in enumerate(["akita", "beagle", "corgi"] * 4):  # 12: more than one TFLite batch
        path = tmp_path / f"p{i}.png"
        synthetic_photo(breed, rng).save(path)
        paths.append(str(path))
    return paths


def test_tflite_gives_tensorflow_features_and_converts_once(tmp_path, photos, tiny_model, capsys):
    backbones = tmp_path / "backbones"
    lite = FeatureCache(tmp_path / "cache-lite", str(tiny_model), IMAGE_SIZE, runtime="tflite",
                        backbones_dir=backbones)
    got = lite.get(photos, ("orig", "flip"))
    assert isinstance(lite.embedder, LiteEmbedder)
    assert "Converting the backbone to TensorFlow Lite" in capsys.readouterr().out
    converted = list(backbones.glob("*.tflite"))
    assert len(converted) == 1

    reference = FeatureCache(tmp_path / "cache-tf", str(tiny_model), IMAGE_SIZE, runtime="tf")
    want = reference.get(photos, ("orig", "flip"))
    assert isinstance(reference.embedder, TFEmbedder)
    for view in ("orig", "flip"):
        np.testing.assert_allclose(got[view], want[view], atol=1e-4)
    assert not np.allclose(got["flip"], got["orig"], atol=1e-3)

    # The flip view is the mirrored photo, through TFLite too.
    mirrored = tmp_path / "mirrored.png"
    ImageOps.mirror(synthetic_photo("akita", np.random.default_rng(4))).save(mirrored)
    again = FeatureCache(tmp_path / "cache-other", str(tiny_model), IMAGE_SIZE, runtime="auto",
                         backbones_dir=backbones)
    np.testing.assert_allclose(again.get([str(mirrored)])["orig"][0], got["flip"][0], atol=1e-4)
    assert "Converting" not in capsys.readouterr().out  # the converted backbone is reused
    assert list(backbones.glob("*.tflite")) == converted


def test_tflite_failure_falls_back_to_tensorflow_unless_asked_for(tmp_path, photos, tiny_model,
                                                                   monkeypatch, capsys):
    def broken(*args):
        raise ValueError("unsupported op")

    monkeypatch.setattr(features, "convert_to_lite", broken)
    auto = FeatureCache(tmp_path / "cache", str(tiny_model), IMAGE_SIZE, backbones_dir=tmp_path / "b")
    assert auto.get(photos[:2])["orig"].shape == (2, 16)
    assert isinstance(auto.embedder, TFEmbedder)
    assert "TFLite cannot run this backbone (ValueError: unsupported op); using TensorFlow" in capsys.readouterr().out

    forced = FeatureCache(tmp_path / "cache2", str(tiny_model), IMAGE_SIZE, runtime="tflite",
                          backbones_dir=tmp_path / "b")
    with pytest.raises(UserError, match="BACKBONE_RUNTIME=tflite: cannot run .* Use BACKBONE_RUNTIME=tf"):
        forced.get(photos[:2])

    wrong = FeatureCache(tmp_path / "cache3", str(tiny_model), IMAGE_SIZE, runtime="onnx")
    with pytest.raises(UserError, match="BACKBONE_RUNTIME=onnx is not one of auto, tflite, tf"):
        wrong.get(photos[:2])
