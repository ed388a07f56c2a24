"""One config object for every command, saved as config.json in each run.

Every field can be overridden from the command line as `--name value` (or
`--NAME value`, the spelling the Makefile uses), so a run folder's config.json
is enough to repeat that run: `python -m dogvision train --config runs/X/config.json`.
"""
import argparse
import dataclasses
from dataclasses import dataclass

from . import UserError
from .fileio import read_json

# Kaggle Models' home of the TF Hub MobileNetV2 (tfhub.dev URLs redirect here).
# The feature-vector variant ends in global pooling: the right input for a new head.
DEFAULT_MODEL_HANDLE = "https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/130-224-feature-vector/2"
# The course's handle; it works too (the new head then sits on 1001 ImageNet logits).
COURSE_MODEL_HANDLE = "https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/130-224-classification/2"
COMPETITION = "dog-breed-identification"


@dataclass
class Config:
    # where things are
    data_dir: str = "data/dog-breed-identification"
    kaggle_zip: str = ""  # use this archive instead of downloading with the kaggle CLI
    cache_dir: str = "data/features"
    backbones_dir: str = "data/backbones"  # the backbone converted to TFLite, once per handle and size
    runs_dir: str = "runs"
    submissions_dir: str = "submissions"
    # data
    full: bool = False  # train on every labeled photo (no held-out metrics)
    num_images: int = 1000  # subset size when not full
    val_fraction: float = 0.2
    num_breeds: int = 120  # the competition's; tests use a few synthetic breeds
    image_size: int = 224
    batch_size: int = 32
    seed: int = 42
    # model
    model_handle: str = DEFAULT_MODEL_HANDLE
    cache_features: bool = True  # frozen backbone: one backbone pass per photo, cached
    backbone_runtime: str = "auto"  # for cached features: auto (TFLite without GPU, else TF), tflite, tf
    fine_tune: bool = False  # backbone in the graph, top layers unfrozen
    fine_tune_layers: int = 20  # how many of the backbone's top layers are unfrozen
    # training
    num_epochs: int = 100
    patience: int = 3
    learning_rate: float = 1e-3  # end to end (CACHE_FEATURES=0)
    fine_tune_learning_rate: float = 1e-5
    head_learning_rate: float = 3e-2  # the head on cached features; 0.01: same log loss, 2.5x the epochs
    head_batch_size: int = 128  # ditto: its steps cost microseconds, so fewer, larger ones
    l2: float = 3e-5  # weight decay on the head's kernel
    dropout: float = 0.2  # on the backbone's features
    calibrate: bool = True  # fit a softmax temperature on the validation split
    tta: str = "auto"  # flip test-time augmentation: auto (if it helps on validation), 1, 0
    # run bookkeeping
    run: str = ""  # run name; default: a timestamp
    resume: bool = False
    force: bool = False


def _parse_bool(text):
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on", "y"):
        return True
    if low in ("0", "false", "no", "off", "n", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0 or true/false, got {text!r}")


def add_config_args(parser, fields=None):
    """Add `--name` (and `--NAME`) options for Config fields, defaulting to unset."""
    for field in dataclasses.fields(Config):
        if fields is not None and field.name not in fields:
            continue
        kind = _parse_bool if field.type is bool else field.type
        flags = [f"--{field.name.replace('_', '-')}", f"--{field.name.upper()}"]
        parser.add_argument(*flags, dest=field.name, type=kind, default=None,
                            metavar=field.name.upper(), help=f"default: {field.default!r}")
    parser.add_argument("--config", default=None, help="start from a saved config.json (a run's)")


def config_from_args(args):
    """Defaults, then a saved config.json if given, then explicit overrides."""
    values = {}
    if getattr(args, "config", None):
        try:
            values.update(read_json(args.config))
        except (OSError, ValueError) as err:
            raise UserError(f"Cannot read config {args.config}: {err}") from err
        known = {f.name for f in dataclasses.fields(Config)}
        values = {k: v for k, v in values.items() if k in known}
        for flag in ("run", "resume", "force"):  # a repeat is a new run unless asked
            values.pop(flag, None)
    for field in dataclasses.fields(Config):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    cfg = Config(**values)
    if cfg.tta not in ("auto", "1", "0"):
        raise UserError(f"TTA must be auto, 1 or 0, got {cfg.tta!r}")
    if cfg.batch_size < 1 or cfg.num_images < 2 or not 0 < cfg.val_fraction < 1:
        raise UserError("BATCH_SIZE must be >= 1, NUM_IMAGES >= 2 and 0 < VAL_FRACTION < 1")
    return cfg


def to_dict(cfg):
    return dataclasses.asdict(cfg)
