"""`predict PHOTO_OR_FOLDER...` on every common format, made here; broken files are named."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BREEDS, COLOURS, base_args
from dogvision import data, photos


def plain_photo(breed, seed=0, size=(48, 36)):
    """A breed's colour with noise (no distractor bar), so the expected answer is certain."""
    rng = np.random.default_rng(seed)
    pixels = np.array(COLOURS[breed], float) + rng.normal(0, 20, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def exif_rotated_jpeg(path, breed):
    """Pixels stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    upright = plain_photo(breed, size=(30, 50))  # portrait, as the camera saw it
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # landscape on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", exif=exif.tobytes())


def animated_gif(path, first, second):
    frames = [plain_photo(first), plain_photo(second, seed=1)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rgba_png(path, breed):
    image = plain_photo(breed).convert("RGBA")
    alpha = np.full(image.size[::-1], 255, np.uint8)
    alpha[:4, :] = 0  # a transparent strip: composited on white, not black
    image.putalpha(Image.fromarray(alpha))
    image.save(path, "PNG")


@pytest.fixture
def photo_dir(tmp_path):
    """One photo per format, named after its expected breed ('any' when colour is not meaningful)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    plain_photo("akita").save(folder / "akita.jpg", "JPEG")
    plain_photo("beagle").convert("L").save(folder / "any_gray.jpg", "JPEG")
    plain_photo("beagle").convert("CMYK").save(folder / "beagle_cmyk.jpg", "JPEG")
    exif_rotated_jpeg(folder / "corgi_exif.jpg", "corgi")
    rgba_png(folder / "corgi_alpha.png", "corgi")
    plain_photo("beagle").save(folder / "beagle.webp", "WEBP")
    animated_gif(folder / "corgi_first_frame.gif", "corgi", "akita")
    plain_photo("akita").save(folder / "akita.bmp", "BMP")
    (folder / "broken.jpg").write_text("this is not a photo")
    return folder


def test_every_format_is_read_like_training_does(photo_dir):
    assert Image.open(photo_dir / "beagle_cmyk.jpg").mode == "CMYK"
    assert Image.open(photo_dir / "any_gray.jpg").mode == "L"
    rotated = data.read_image(photo_dir / "corgi_exif.jpg")
    assert rotated.shape == (50, 30, 3)  # EXIF orientation applied: portrait again
    assert Image.open(photo_dir / "corgi_exif.jpg").size == (50, 30)  # stored landscape
    alpha = data.read_image(photo_dir / "corgi_alpha.png")
    assert alpha.shape == (36, 48, 3) and (alpha[:4] == 255).all()  # transparent -> white
    gif = data.read_image(photo_dir / "corgi_first_frame.gif")
    assert gif.mean(axis=(0, 1)).argmax() == 2  # the blue first frame, not the red second one
    for name in ("any_gray.jpg", "beagle_cmyk.jpg", "beagle.webp", "akita.bmp"):
        image = data.read_image(photo_dir / name)
        assert image.dtype == np.uint8 and image.shape == (36, 48, 3), name
    cmyk = data.read_image(photo_dir / "beagle_cmyk.jpg").mean(axis=(0, 1))
    np.testing.assert_allclose(cmyk, COLOURS["beagle"], atol=12)  # colours survive CMYK
    with pytest.raises(Exception):
        data.read_image(photo_dir / "broken.jpg")


def test_predict_folder_names_the_broken_file_and_predicts_the_rest(project, tiny_model, cli, photo_dir):
    cache_files = sorted(Path("data/features").rglob("*.npz"))
    code, out, err = cli("predict", photo_dir, "--json", *base_args(tiny_model))
    assert code == 0, err
    assert f"cannot read {photo_dir / 'broken.jpg'}" in err
    result = json.loads(out)
    assert result["run"] == "first"
    assert [u["photo"] for u in result["unreadable"]] == [str(photo_dir / "broken.jpg")]
    predicted = {Path(p["photo"]).name: p for p in result["predictions"]}
    assert sorted(predicted) == sorted(p.name for p in photo_dir.iterdir() if p.name != "broken.jpg")
    for name, p in predicted.items():
        assert len(p["top"]) == len(BREEDS)  # --top 5 asks for more breeds than the run has
        assert sum(t["probability"] for t in p["top"]) == pytest.approx(1, abs=1e-4)
        expected = name.split("_")[0].split(".")[0]
        if expected != "any":
            assert p["top"][0]["breed"] == expected, (name, p["top"])
    # User photos do not go into the shared feature cache.
    assert sorted(Path("data/features").rglob("*.npz")) == cache_files


def test_predict_table_top_k_plot_and_low_confidence(project, tiny_model, cli, photo_dir, tmp_path, monkeypatch):
    photo = photo_dir / "akita.jpg"
    code, out, err = cli("predict", photo, "--top", 2, "--plot", "--plot-dir", tmp_path / "plots", *base_args(tiny_model))
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index(str(photo))
    assert lines[start + 1].split()[:2] == ["1.", "akita"] and lines[start + 2].split()[0] == "2."
    assert not lines[start + 3:] or not lines[start + 3].startswith("  3.")
    assert "may not be one of" not in out
    plot = tmp_path / "plots" / "akita_jpg.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(plot).size[0] > 300

    monkeypatch.setattr(photos, "LOW_CONFIDENCE", 1.01)  # every photo is then "not sure"
    code, out, err = cli("predict", photo, *base_args(tiny_model))
    assert code == 0 and "this may not be one of the 3 breeds" in out


def test_predict_fails_only_when_nothing_can_be_read(project, tiny_model, cli, tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    buf = io.BytesIO()
    plain_photo("akita").save(buf, "PNG")
    (folder / "b.png").write_bytes(buf.getvalue()[:60])  # truncated PNG
    code, out, err = cli("predict", folder, tmp_path / "nowhere.jpg", *base_args(tiny_model))
    assert code == 2
    assert "None of the 3 photo(s) could be read" in err
    for name in ("a.jpg", "b.png", "nowhere.jpg"):
        assert name in err
    assert "cannot read" in err and "no such file" in err
