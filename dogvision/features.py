"""Backbone features, computed once per photo and kept on disk.

With a frozen backbone, a photo's embedding never changes, so it is computed once
per (model handle, image size, view) and reused by every later training run and
prediction. The cache folder's name hashes the handle (and, for a local folder,
its files' sizes and times) and the image size, so another backbone or size can
never pick up stale features. Rows are keyed by a hash of the photo's bytes, so a
re-unpacked or renamed photo is still found and an edited one is recomputed.
"""
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from .data import make_dataset
from .fileio import atomic_path, write_json
from .model import resolve_handle

VIEWS = ("orig", "flip")  # flip: the photo mirrored left-right, for test-time augmentation


def cache_key(handle, image_size):
    resolved = resolve_handle(handle)
    ident = [resolved, int(image_size)]
    if "://" not in resolved:
        for path in sorted(Path(resolved).rglob("*")):
            if path.is_file():
                stat = path.stat()
                ident.append([str(path.relative_to(resolved)), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def photo_key(path):
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


_EMBED_FUNCTIONS = {}


def embed_function(backbone, views):
    """One traced tf.function per (backbone, views): tracing a hub model costs seconds."""
    key = (id(backbone), views)
    if key not in _EMBED_FUNCTIONS:
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def embed(images):
            batch = [images if v == "orig" else tf.reverse(images, axis=[2]) for v in views]
            return tf.split(backbone(tf.concat(batch, 0), training=False), len(views))
        _EMBED_FUNCTIONS[key] = (backbone, embed)  # keeps backbone alive so its id stays unique
    return _EMBED_FUNCTIONS[key][1]


def embed_batches(backbone, dataset, views, total, desc):
    """Run the backbone over a dataset of image batches; both views go through in one call."""
    embed = embed_function(backbone, tuple(views))
    out = {v: [] for v in views}
    with tqdm(total=total, desc=desc, unit="photo") as bar:
        for images in dataset:
            for view, feats in zip(views, embed(images)):
                out[view].append(tf.cast(feats, tf.float32).numpy())
            bar.update(int(images.shape[0]))
    return {v: np.concatenate(out[v]) if out[v] else np.zeros((0, 0), np.float32) for v in views}


def extract(backbone, paths, views, image_size, batch_size, desc="Backbone features"):
    dataset = make_dataset(paths, image_size=image_size, batch_size=batch_size)
    return embed_batches(backbone, dataset, views, len(paths), desc)


class FeatureCache:
    """Features of photos for one (handle, image size), one .npz chunk per extraction."""

    def __init__(self, cache_dir, handle, image_size, batch_size=32, backbone=None):
        self.handle, self.image_size, self.batch_size = handle, image_size, batch_size
        self.dir = Path(cache_dir) / cache_key(handle, image_size)
        self._backbone = backbone
        self._rows = {v: {} for v in VIEWS}
        self.computed = 0  # photos whose features this object had to compute (tests read it)
        for chunk in sorted(self.dir.glob("*.npz")):
            with np.load(chunk) as npz:
                view = str(npz["view"])
                self._rows[view].update(zip(npz["keys"].tolist(), npz["features"]))

    @property
    def backbone(self):
        if self._backbone is None:
            from .model import load_backbone
            self._backbone = load_backbone(self.handle)
        return self._backbone

    def get(self, paths, views=("orig",)):
        """{view: float32 array [len(paths), dim]}, computing only what is not cached."""
        keys = [photo_key(p) for p in paths]
        missing = [i for i, k in enumerate(keys) if any(k not in self._rows[v] for v in views)]
        if missing:
            todo = [paths[i] for i in missing]
            print(f"Computing {'+'.join(views)} features of {len(todo)} photo(s) "
                  f"({len(paths) - len(todo)} cached) in {self.dir}")
            feats = extract(self.backbone, todo, views, self.image_size, self.batch_size)
            self.computed += len(todo)
            self._save([keys[i] for i in missing], feats)
        return {v: np.stack([self._rows[v][k] for k in keys]) for v in views}

    def _save(self, keys, feats):
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "meta.json", {"handle": self.handle, "image_size": self.image_size})
        stamp = f"{time.time_ns()}-{os.getpid()}"
        for view, array in feats.items():
            with atomic_path(self.dir / f"{view}-{stamp}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, view=view, keys=np.array(keys), features=array.astype(np.float32))
            self._rows[view].update(zip(keys, array))
