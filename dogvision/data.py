"""The competition's data: get it, unpack it, check it, split it, and feed it to TensorFlow.

Every check runs before any training so that a broken photo or a wrong CSV costs
seconds, not an hour: each problem is reported with the file(s) and the fix.
"""
import concurrent.futures
import os
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from . import UserError, kaggle_io
from .config import COMPETITION
from .fileio import read_json, write_json

MARKER = ".verified.json"  # written last by `data`: its presence means "unpacked and checked"
IMAGE_EXTENSION = ".jpg"
GET_ARCHIVE_AGAIN = ("Download it again: delete it and run `make data` (or, for an archive given with "
                     "KAGGLE_ZIP, pass a complete copy).")


class DataError(UserError):
    pass


# ---------------------------------------------------------------- get + unpack

def prepare_data(cfg):
    """The `data` command: download (or take KAGGLE_ZIP), unpack, verify. Idempotent."""
    root = Path(cfg.data_dir)
    marker = root / MARKER
    if marker.is_file():
        summary = read_json(marker)
        print(f"Data already in {root}/ and verified: {format_summary(summary)}")
        return summary
    if not root.is_dir():
        archive = Path(cfg.kaggle_zip) if cfg.kaggle_zip else None
        if archive is not None and not archive.is_file():
            raise DataError(f"KAGGLE_ZIP={archive} does not exist. Give the path of the competition's "
                            "zip, or leave KAGGLE_ZIP empty to download it with the kaggle CLI.")
        if archive is None:
            archive = root.parent / f"{COMPETITION}.zip"
            if archive.is_file() and not _zip_is_complete(archive):
                print(f"{archive} is incomplete (an interrupted download?): downloading it again.")
                archive.unlink()
            if not archive.is_file():
                archive = kaggle_io.download_competition(root.parent)
        unpack(archive, root)
    summary = verify(root, cfg.num_breeds)
    write_json(marker, summary)
    print(f"Verified {root}/: {format_summary(summary)}")
    return summary


def _zip_is_complete(archive):
    try:
        with zipfile.ZipFile(archive) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def unpack(archive, root):
    """Unpack into root.partial/, then rename: a folder named `root` is always complete."""
    root = Path(root)
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        print(f"Removing {partial}/ left by an interrupted unpack.")
        shutil.rmtree(partial)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive} is not a readable zip ({err}). {GET_ARCHIVE_AGAIN}") from err
    with zf:
        members = zf.infolist()
        _check_members(archive, members)
        for member in tqdm(members, desc=f"Unpacking {Path(archive).name}", unit="file"):
            try:
                zf.extract(member, partial)
            except (zipfile.BadZipFile, OSError, EOFError) as err:  # CRC error, truncated member
                shutil.rmtree(partial, ignore_errors=True)
                raise DataError(f"{archive} is damaged at {member.filename} ({err}). {GET_ARCHIVE_AGAIN}") from err
    # Kaggle's archive has labels.csv at the top; accept one extra folder level too.
    inner = partial
    if not (partial / "labels.csv").exists():
        subdirs = [p for p in partial.iterdir() if p.is_dir()]
        if len(subdirs) == 1 and (subdirs[0] / "labels.csv").exists():
            inner = subdirs[0]
    os.replace(inner, root)
    if inner != partial:
        shutil.rmtree(partial)


def _check_members(archive, members):
    """Refuse any member that would land outside the target folder (zip slip) or is a link."""
    for member in members:
        name = member.filename
        parts = Path(name).parts
        is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]) or is_link:
            raise DataError(f"{archive} has an unsafe member {name!r} (it would be written outside "
                            "the data folder). Refusing to unpack it; get the archive from Kaggle again.")


# ---------------------------------------------------------------- verify

def verify(root, num_breeds=120, decode=True):
    """Check the unpacked data against the competition's layout; return counts or raise DataError."""
    root = Path(root)
    labels = read_labels(root)
    sample = read_sample_submission(root)
    breeds = sorted(labels["breed"].unique())
    columns = list(sample.columns[1:])
    if len(columns) != num_breeds:
        raise DataError(f"{root / 'sample_submission.csv'} has {len(columns)} breed columns, expected "
                        f"{num_breeds}. Download the competition's data again.")
    unknown = sorted(set(breeds) - set(columns))
    if unknown:
        raise DataError(f"{root / 'labels.csv'} has breeds that are not columns of sample_submission.csv: "
                        f"{_some(unknown)}. Fix their spelling in labels.csv (the column names are the breeds).")
    if len(breeds) != num_breeds:
        missing = sorted(set(columns) - set(breeds))
        raise DataError(f"{root / 'labels.csv'} has {len(breeds)} breeds, expected {num_breeds}; no photo of: "
                        f"{_some(missing)}. Every breed needs labeled photos: restore labels.csv from the archive.")
    train_paths = [root / "train" / f"{i}{IMAGE_EXTENSION}" for i in labels["id"]]
    test_paths = [root / "test" / f"{i}{IMAGE_EXTENSION}" for i in sample["id"]]
    for kind, paths, csv in (("train", train_paths, "labels.csv"), ("test", test_paths, "sample_submission.csv")):
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} photo(s) listed in {root / csv} are missing from {root / kind}/: "
                            f"{_some([str(p) for p in missing])}. The data is incomplete: delete {root}/ "
                            "and run `make data` again.")
    extra = sorted(set(p.stem for p in (root / "test").glob("*")) - set(sample["id"]))
    if extra:
        warnings.warn(f"{len(extra)} file(s) in {root / 'test'}/ are not in sample_submission.csv and will "
                      f"not be predicted: {_some(extra)}", stacklevel=2)
    summary = {"labeled": len(labels), "breeds": len(breeds), "test": len(sample),
               "checked_at": time.time(), "unreadable_train": []}
    if decode:
        bad_test = find_unreadable(test_paths, "Checking test photos")
        if bad_test:
            raise DataError(f"{len(bad_test)} test photo(s) cannot be decoded: {_some(bad_test)}. Every test id "
                            f"must be predicted: delete {root}/ and run `make data` to get them again.")
        bad_train = find_unreadable(train_paths, "Checking train photos")
        if bad_train:
            warnings.warn(f"{len(bad_train)} train photo(s) cannot be decoded and will be skipped: "
                          f"{_some(bad_train)}. To use them, replace the files (or `make data` again).",
                          stacklevel=2)
        summary["unreadable_train"] = [Path(p).stem for p in bad_train]
    return summary


def read_labels(root):
    path = Path(root) / "labels.csv"
    frame = read_csv(path)
    if list(frame.columns) != ["id", "breed"]:
        raise DataError(f"{path} must have the header `id,breed`, found {','.join(map(str, frame.columns))}.")
    frame["id"] = frame["id"].astype(str)
    frame["breed"] = frame["breed"].astype(str)
    dup = frame["id"][frame["id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path} lists {len(dup)} id(s) more than once: {_some(dup)}. Keep one row per photo.")
    return frame


def read_sample_submission(root):
    path = Path(root) / "sample_submission.csv"
    frame = read_csv(path)
    if len(frame.columns) < 2 or frame.columns[0] != "id":
        raise DataError(f"{path} must start with an `id` column followed by the breeds.")
    frame["id"] = frame["id"].astype(str)
    dup = frame["id"][frame["id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path} lists {len(dup)} test id(s) more than once: {_some(dup)}. Kaggle expects one "
                        "row per test photo: restore sample_submission.csv from the archive.")
    return frame


def read_csv(path):
    if not path.is_file():
        raise DataError(f"{path} is missing. Run `make data` (or check DATA_DIR).")
    try:
        return pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path} is not a readable CSV ({err}).") from err


def _some(items, limit=5):
    items = [str(i) for i in items]
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def format_summary(summary):
    return f"{summary['labeled']} labeled photos, {summary['breeds']} breeds, {summary['test']} test photos"


# ---------------------------------------------------------------- photos

def read_image(path):
    """Any common photo as an RGB uint8 array: EXIF rotation applied, alpha on white, GIF's first frame."""
    with Image.open(path) as img:
        img.seek(0)
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        return np.asarray(img.convert("RGB"))


def is_readable(path):
    try:
        read_image(path)
        return True
    except Exception:  # noqa: BLE001 - any decoder failure means "unreadable"
        return False


def find_unreadable(paths, desc="Checking photos"):
    if not paths:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        ok = list(tqdm(pool.map(is_readable, paths), total=len(paths), desc=desc, unit="photo", leave=False))
    return [str(p) for p, good in zip(paths, ok) if not good]


# ---------------------------------------------------------------- labels + split

def load_labeled(cfg):
    """Labeled photos that exist and decode, with the breed list; checks run first."""
    root = Path(cfg.data_dir)
    marker = root / MARKER
    if not marker.is_file():
        raise DataError(f"{root}/ is not prepared (no {MARKER}). Run `make data` first.")
    summary = read_json(marker)
    verify(root, cfg.num_breeds, decode=False)  # cheap checks: files may have changed since `make data`
    labels = read_labels(root)
    labels["path"] = [str(root / "train" / f"{i}{IMAGE_EXTENSION}") for i in labels["id"]]
    changed = [p for p in labels["path"] if os.path.getmtime(p) > summary["checked_at"]]
    skip = set(summary.get("unreadable_train", [])) | {Path(p).stem for p in find_unreadable(changed)}
    if skip:
        warnings.warn(f"Skipping {len(skip)} unreadable train photo(s): {_some(sorted(skip))}", stacklevel=2)
    breeds = sorted(labels["breed"].unique())
    labels = labels[~labels["id"].isin(skip)].reset_index(drop=True)
    labels["label"] = labels["breed"].map({b: i for i, b in enumerate(breeds)})
    return labels, breeds


def load_test(cfg):
    """Test ids and paths in sample_submission's order; photos changed since `make data` are re-checked."""
    root = Path(cfg.data_dir)
    sample = read_sample_submission(root)[["id"]].copy()  # read_csv leaves a block per column
    sample["path"] = [str(root / "test" / f"{i}{IMAGE_EXTENSION}") for i in sample["id"]]
    marker = root / MARKER
    checked_at = read_json(marker)["checked_at"] if marker.is_file() else 0.0
    missing = [p for p in sample["path"] if not os.path.isfile(p)]
    changed = [p for p in sample["path"] if p not in missing and os.path.getmtime(p) > checked_at]
    bad = missing + find_unreadable(changed, "Checking changed test photos")
    if bad:
        raise DataError(f"{len(bad)} test photo(s) are missing or cannot be decoded: {_some(bad)}. Every test id "
                        f"must be predicted: delete {root}/ and run `make data` to get them again.")
    return sample


def one_hot(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]


def _stratify(y, n_test):
    """Stratify when every class has 2+ members and the test part can hold every class."""
    counts = pd.Series(y).value_counts()
    n_train = len(y) - n_test
    ok = counts.min() >= 2 and n_test >= len(counts) and n_train >= len(counts)
    return y if ok else None


def split(labels, cfg):
    """(train, val): a seeded, stratified-where-possible split.

    Not full: a subset of NUM_IMAGES photos, split 80/20. Full: every photo, and
    the same 80/20 split is still returned so train.py can choose epochs and
    temperature on it before refitting on everything.
    """
    from sklearn.model_selection import train_test_split

    frame = labels
    if not cfg.full and cfg.num_images < len(labels):
        frame, _ = train_test_split(labels, train_size=cfg.num_images, random_state=cfg.seed,
                                    stratify=_stratify(labels["label"].values, len(labels) - cfg.num_images))
    n_val = max(1, int(round(len(frame) * cfg.val_fraction)))
    train, val = train_test_split(frame, test_size=n_val, random_state=cfg.seed,
                                  stratify=_stratify(frame["label"].values, n_val))
    return train.reset_index(drop=True), val.reset_index(drop=True)


# ---------------------------------------------------------------- tf.data

def needs_pil(path):
    """True unless TensorFlow's own decoder reads the photo exactly as read_image does.

    Plain RGB or grayscale JPEGs (no EXIF rotation) and opaque PNG/BMP decode natively,
    which runs outside Python's GIL: about twice the photos/s of a PIL decode beside the
    backbone on 2 cores. Everything else (CMYK, EXIF-rotated, alpha, WEBP, GIF) uses PIL.
    """
    try:
        with Image.open(path) as img:
            if img.format not in ("JPEG", "PNG", "BMP") or img.mode not in ("RGB", "L"):
                return True
            return img.format == "JPEG" and img.getexif().get(0x0112, 1) != 1  # EXIF orientation
    except Exception:  # noqa: BLE001 - let read_image raise the real error
        return True


def make_dataset(paths, labels=None, num_classes=None, image_size=224, batch_size=32,
                 shuffle=False, seed=42):
    """A tf.data pipeline from file paths: decode, [0,1] float32, resize, batch, prefetch.

    Photos TensorFlow decodes the same way go through its native decoder; the others
    through PIL (read_image), so every format a user drops in reads as in `predict`.
    Labels, when given, are one-hot.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    slices = (paths, [needs_pil(p) for p in paths])
    if labels is not None:
        slices += (one_hot(labels, num_classes),)
    ds = tf.data.Dataset.from_tensor_slices(slices)
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def with_pil(path):
        image = tf.numpy_function(lambda p: read_image(p.decode()), [path], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [None, None, 3])

    def native(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    def load(path, pil, *label):
        image = tf.cond(pil, lambda: with_pil(path), lambda: native(path))
        image = tf.image.convert_image_dtype(image, tf.float32)
        image = tf.image.resize(image, [image_size, image_size])
        return (image, *label) if label else image

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
