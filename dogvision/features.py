"""Backbone features, computed once per photo and kept on disk.

With a frozen backbone, a photo's embedding never changes, so it is computed once
per (model handle, image size, view) and reused by every later training run and
prediction. The cache folder's name hashes the handle (and, for a local folder,
its files' sizes and times) and the image size, so another backbone or size can
never pick up stale features. Rows are keyed by a hash of the photo's bytes, so a
re-unpacked or renamed photo is still found and an edited one is recomputed.

Without a GPU the backbone runs as TensorFlow Lite (XNNPACK): the same features at
~2.7x TensorFlow's CPU rate, which is most of a training run's time.
"""
import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from . import UserError
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


RUNTIMES = ("auto", "tflite", "tf")
LITE_BATCH = 8  # XNNPACK on 2 cores: 386 photos/s at batch 8, 328 at batch 32
LITE_TOLERANCE = 1e-3  # max |difference| allowed between TFLite and TensorFlow features


class TFEmbedder:
    """The backbone in TensorFlow: on GPUs, for a fine-tuned backbone, and as the fallback."""

    name = "tensorflow"

    def __init__(self, backbone):
        self.backbone = backbone
        self._embed = {}  # views -> traced function: tracing a hub model costs seconds

    def __call__(self, images, views):
        views = tuple(views)
        if views not in self._embed:
            @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
            def embed(batch):  # every view in one backbone call
                stacked = tf.concat([batch if v == "orig" else tf.reverse(batch, axis=[2]) for v in views], 0)
                return tf.split(tf.cast(self.backbone(stacked, training=False), tf.float32), len(views))
            self._embed[views] = embed
        return [f.numpy() for f in self._embed[views](images)]


class LiteEmbedder:
    """The frozen backbone converted to TensorFlow Lite and run by its XNNPACK CPU kernels.

    On CPUs XNNPACK runs MobileNetV2 ~2.8x faster than TensorFlow (390 vs 138 photos/s
    on 2 cores) with the same features (max difference ~3e-5, checked at conversion).
    """

    name = "tflite"

    def __init__(self, path, batch_size=LITE_BATCH):
        self.interpreter = lite_interpreter(path)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch_size = batch_size
        self._shape = None

    def _run(self, images):
        """Features of one batch; a short last batch is padded to the allocated size."""
        n = len(images)
        if self._shape != images.shape[1:]:
            self._shape = images.shape[1:]
            self.interpreter.resize_tensor_input(self.input, [self.batch_size, *self._shape])
            self.interpreter.allocate_tensors()
        if n < self.batch_size:
            images = np.concatenate([images, np.zeros((self.batch_size - n, *self._shape), np.float32)])
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(images, np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)[:n].copy()

    def __call__(self, images, views):
        images = np.asarray(images)
        out = []
        for view in views:
            batch = images if view == "orig" else images[:, :, ::-1]
            out.append(np.concatenate([self._run(batch[i:i + self.batch_size])
                                       for i in range(0, len(batch), self.batch_size)]))
        return out


def lite_interpreter(path):
    """LiteRT's interpreter when installed, else TensorFlow's (deprecated, but in TF 2.21)."""
    threads = os.cpu_count() or 1
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    return Interpreter(model_path=str(path), num_threads=threads)


def convert_to_lite(backbone, image_size, path):
    """Write the backbone as a .tflite file; return its embedder, checked to give TensorFlow's features."""
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
    function = tf.function(lambda x: backbone(x, training=False)).get_concrete_function(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = tf.lite.TFLiteConverter.from_concrete_functions([function], backbone).convert()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(flat)
    probe = tf.random.stateless_uniform([2, image_size, image_size, 3], seed=[1, 2])
    expected = tf.cast(backbone(probe, training=False), tf.float32).numpy()
    embedder = LiteEmbedder(path)
    got = embedder(probe.numpy(), ["orig"])[0]
    if got.shape != expected.shape or np.abs(got - expected).max() > LITE_TOLERANCE:
        path.unlink()
        raise ValueError(f"TFLite features differ from TensorFlow's (max {np.abs(got - expected).max():.2g})")
    return embedder


def make_embedder(handle, image_size, runtime="auto", backbones_dir=None):
    """TFLite on a CPU-only machine (auto), TensorFlow on GPUs or when TFLite cannot take the model.

    The converted model is kept as backbones_dir/<key>.tflite, under the same key as the
    features it makes, so it is converted once per backbone and image size.
    """
    from .model import load_backbone

    if runtime not in RUNTIMES:
        raise UserError(f"BACKBONE_RUNTIME={runtime} is not one of {', '.join(RUNTIMES)}.")
    use_lite = runtime == "tflite" or (runtime == "auto" and not tf.config.list_physical_devices("GPU"))
    backbone = None
    if use_lite and backbones_dir is not None:
        path = Path(backbones_dir) / f"{cache_key(handle, image_size)}.tflite"
        try:
            if path.exists():
                return LiteEmbedder(path)
            print(f"Converting the backbone to TensorFlow Lite (once per backbone) -> {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            backbone = load_backbone(handle)
            return convert_to_lite(backbone, image_size, path)
        except Exception as err:  # noqa: BLE001 - any failure: TensorFlow still works
            if runtime == "tflite":
                raise UserError(f"BACKBONE_RUNTIME=tflite: cannot run {handle} with TFLite: {err}. "
                                f"Use BACKBONE_RUNTIME=tf.") from err
            print(f"TFLite cannot run this backbone ({type(err).__name__}: {err}); using TensorFlow.")
    return TFEmbedder(backbone or load_backbone(handle))


def extract(embedder, paths, views, image_size, batch_size, desc="Backbone features"):
    """{view: float32 array [len(paths), dim]}: the backbone over photo files, with a progress bar."""
    dataset = make_dataset(paths, image_size=image_size, batch_size=batch_size)
    out = {v: [] for v in views}
    with tqdm(total=len(paths), desc=desc, unit="photo") as bar:
        for images in dataset:
            for view, feats in zip(views, embedder(images, views)):
                out[view].append(feats)
            bar.update(int(images.shape[0]))
    return {v: np.concatenate(out[v]) if out[v] else np.zeros((0, 0), np.float32) for v in views}


class FeatureCache:
    """Features of photos for one (handle, image size), one .npz chunk per extraction."""

    def __init__(self, cache_dir, handle, image_size, batch_size=32, runtime="auto", backbones_dir=None):
        self.handle, self.image_size, self.batch_size = handle, image_size, batch_size
        self.runtime, self.backbones_dir = runtime, backbones_dir
        self.dir = Path(cache_dir) / cache_key(handle, image_size)
        self._embedder = None
        self._rows = None  # {view: {photo key: features}}, read on first use
        self.computed = 0  # photos whose features this object had to compute (tests read it)

    @property
    def rows(self):
        if self._rows is None:
            self._rows = {v: {} for v in VIEWS}
            for chunk in sorted(self.dir.glob("*.npz")):
                with np.load(chunk) as npz:
                    self._rows[str(npz["view"])].update(zip(npz["keys"].tolist(), npz["features"]))
        return self._rows

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = make_embedder(self.handle, self.image_size, self.runtime, self.backbones_dir)
        return self._embedder

    def get(self, paths, views=("orig",)):
        """{view: float32 array [len(paths), dim]}, computing only what is not cached."""
        keys = [photo_key(p) for p in paths]
        missing = [i for i, k in enumerate(keys) if any(k not in self.rows[v] for v in views)]
        if missing:
            todo = [paths[i] for i in missing]
            embedder = self.embedder
            print(f"Computing {'+'.join(views)} features of {len(todo)} photo(s) "
                  f"({len(paths) - len(todo)} cached) with {embedder.name} in {self.dir}")
            feats = extract(embedder, todo, views, self.image_size, self.batch_size)
            self.computed += len(todo)
            self._save([keys[i] for i in missing], feats)
        return {v: np.stack([self.rows[v][k] for k in keys]) for v in views}

    def _save(self, keys, feats):
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "meta.json", {"handle": self.handle, "image_size": self.image_size})
        stamp = f"{time.time_ns()}-{os.getpid()}"
        for view, array in feats.items():
            with atomic_path(self.dir / f"{view}-{stamp}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, view=view, keys=np.array(keys), features=array.astype(np.float32))
            self.rows[view].update(zip(keys, array))
