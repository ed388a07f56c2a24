"""Training: a softmax head on cached backbone features (default), or end to end.

Default (frozen backbone): each photo goes through the backbone once (features.py),
then the head trains in milliseconds per epoch with early stopping on validation log
loss, a temperature is fitted on the validation split so the probabilities are
calibrated, and flip test-time augmentation is kept only if it lowers validation
log loss. FULL=1 makes those choices on an 80/20 split, then refits the head on
every labeled photo for the chosen number of epochs.

FINE_TUNE=1 (or CACHE_FEATURES=0, the course's pipeline) puts the backbone in the
graph and reads photos every epoch.
"""
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import accuracy_score, log_loss

from . import UserError, data, model, plots
from .config import to_dict
from .features import FeatureCache
from .fileio import atomic_path, write_json, write_text

keras = tf.keras
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.25, 8.0


# ---------------------------------------------------------------- run folders

def run_name(cfg):
    """RUN= if given, else a timestamp and the mode; never the name of an existing run."""
    if cfg.run:
        return cfg.run
    mode = "full" if cfg.full else f"n{cfg.num_images}"
    name = time.strftime("%Y%m%d-%H%M%S") + f"-{mode}" + ("-ft" if cfg.fine_tune else "")
    taken = lambda n: (Path(cfg.runs_dir) / n).exists()  # noqa: E731
    suffix = 2
    unique = name
    while taken(unique):
        unique, suffix = f"{name}-{suffix}", suffix + 1
    return unique


def open_run_dir(cfg):
    """A new runs/<name>/; an existing one only with RESUME=1 (unfinished) or FORCE=1."""
    run_dir = Path(cfg.runs_dir) / run_name(cfg)
    if run_dir.exists():
        finished = (run_dir / "metrics.json").exists()
        if cfg.force:
            print(f"FORCE=1: replacing {run_dir}/")
            shutil.rmtree(run_dir)
        elif cfg.resume and not finished:
            print(f"RESUME=1: continuing {run_dir}/ from its last checkpoint")
        else:
            state = "a finished run" if finished else "an unfinished run"
            raise UserError(f"{run_dir}/ is {state}; it is not overwritten. Choose another RUN=, "
                            + ("or RESUME=1 to continue it, " if not finished else "")
                            + "or FORCE=1 to replace it.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def callbacks(run_dir, cfg, monitor="val_loss", early_stop=True):
    cbs = [keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")),
           keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=cfg.resume),
           keras.callbacks.BackupAndRestore(str(run_dir / "checkpoint"))]
    if early_stop:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience,
                                                 restore_best_weights=True, verbose=1))
    return cbs


# ---------------------------------------------------------------- calibration

def log_probs(probs):
    return np.log(np.maximum(probs, 1e-45))  # float32 softmax underflows to 0 below ~1e-45


def fit_temperature(probs, y):
    """The T minimising log loss of softmax(log(p) / T) on labeled data (T > 1 softens).

    T is kept in [MIN_TEMPERATURE, MAX_TEMPERATURE]: a small validation split that the
    head gets all right would otherwise ask for near-zero T, i.e. certainty.
    """
    logp = log_probs(probs)
    labels = np.arange(probs.shape[1])

    def loss(log_t):
        return log_loss(y, softmax(logp / np.exp(log_t), axis=1), labels=labels)

    best = minimize_scalar(loss, bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)), method="bounded")
    return float(np.exp(best.x))


def scale(probs, temperature):
    return softmax(log_softmax(log_probs(probs), axis=1) / temperature, axis=1)


def evaluate_probs(probs, y, num_classes):
    labels = np.arange(num_classes)
    return {"accuracy": float(accuracy_score(y, probs.argmax(1))),
            "log_loss": float(log_loss(y, probs, labels=labels))}


# ---------------------------------------------------------------- training

def train(cfg):
    """The `train` command. Returns the run folder."""
    labels, breeds = data.load_labeled(cfg)
    train_df, val_df = data.split(labels, cfg)
    run_dir = open_run_dir(cfg)
    write_json(run_dir / "config.json", to_dict(cfg))
    write_text(run_dir / "breeds.txt", "\n".join(breeds) + "\n")
    print(model.describe_devices())
    model.use_mixed_precision()
    what = "all" if cfg.full else "a subset of"
    print(f"Run {run_dir}: {what} {len(train_df) + len(val_df)} labeled photos "
          f"({len(train_df)} train / {len(val_df)} validation{', then refit on all' if cfg.full else ''}), "
          f"{len(breeds)} breeds, backbone {cfg.model_handle}")
    start = time.time()
    if cfg.fine_tune or not cfg.cache_features:
        metrics = train_end_to_end(cfg, run_dir, train_df, val_df, labels, len(breeds))
    else:
        metrics = train_head(cfg, run_dir, train_df, val_df, labels, len(breeds))
    metrics.update(train_seconds=round(time.time() - start, 1), num_train=len(train_df),
                   num_val=len(val_df), num_labeled=len(labels), full=cfg.full)
    plots.plot_history(run_dir / "history.csv", run_dir / "curves.png")
    write_json(run_dir / "metrics.json", metrics)  # written last: marks the run finished
    for pointer in ["LATEST"] + (["LATEST_FULL"] if cfg.full else []):
        write_text(Path(cfg.runs_dir) / pointer, run_dir.name + "\n")
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    print(format_metrics(metrics))
    print(f"Saved {run_dir}/ (model, config, breeds, metrics, logs). Next: make submission RUN={run_dir.name}")
    return run_dir


def format_metrics(m):
    parts = [f"epochs {m.get('best_epoch')}"]
    if "val_accuracy" in m:
        parts.append(f"val accuracy {m['val_accuracy']:.3f}")
    if "val_log_loss_raw" in m:
        parts.append(f"val log loss {m['val_log_loss_raw']:.3f} -> {m['val_log_loss']:.3f} "
                     f"calibrated (T={m['temperature']:.2f}, TTA {'on' if m['tta'] else 'off'})")
    elif "val_log_loss" in m:
        parts.append(f"val log loss {m['val_log_loss']:.3f}")
    if m.get("full"):
        parts.append("(chosen on the split; refit on all photos)")
    return "Result: " + ", ".join(parts)


def train_head(cfg, run_dir, train_df, val_df, labels, num_classes):
    """Head on cached features; choose epochs, temperature and TTA on validation."""
    strategy = model.get_strategy()  # first: it may split the CPU into devices (DOGVISION_DEVICES)
    batch_size = cfg.head_batch_size * strategy.num_replicas_in_sync
    if strategy.num_replicas_in_sync > 1:
        print(f"MirroredStrategy over {strategy.num_replicas_in_sync} devices, global batch {batch_size}")
    use_flip = cfg.tta != "0"
    cache = FeatureCache(cfg.cache_dir, cfg.model_handle, cfg.image_size, cfg.batch_size,
                         cfg.backbone_runtime, cfg.backbones_dir)
    x_train = cache.get(list(train_df["path"]), ("orig",))["orig"]
    val_views = cache.get(list(val_df["path"]), ("orig", "flip") if use_flip else ("orig",))
    y_train, y_val = train_df["label"].values, val_df["label"].values

    def new_head():  # seeded, so the refit starts where the split's run started
        tf.keras.utils.set_random_seed(cfg.seed)
        with strategy.scope():
            return model.build_head(x_train.shape[1], num_classes, cfg, normalize=True,
                                    learning_rate=cfg.head_learning_rate)

    head = new_head()
    history = head.fit(feature_dataset(x_train, y_train, num_classes, batch_size, cfg.seed),
                       validation_data=feature_dataset(val_views["orig"], y_val, num_classes, 1024),
                       epochs=cfg.num_epochs, verbose=2, callbacks=callbacks(run_dir, cfg))
    val_losses = history.history["val_loss"]
    best_epoch = int(np.argmin(val_losses)) + 1

    # Temperature and TTA on the validation split.
    candidates = {False: val_views["orig"]}
    if use_flip:
        candidates[True] = (val_views["orig"] + val_views["flip"]) / 2
    scored = {}
    for tta, feats in candidates.items():
        probs = head.predict(feats, batch_size=1024, verbose=0)
        temperature = fit_temperature(probs, y_val) if cfg.calibrate else 1.0
        raw = evaluate_probs(probs, y_val, num_classes)
        calibrated = evaluate_probs(scale(probs, temperature), y_val, num_classes)
        scored[tta] = (calibrated["log_loss"], temperature, raw, calibrated)
    tta = {"1": True, "0": False}.get(cfg.tta, min(scored, key=lambda k: scored[k][0]))
    _, temperature, raw, calibrated = scored[tta]
    metrics = {"mode": "head on cached features", "best_epoch": best_epoch, "epochs_run": len(val_losses),
               "temperature": temperature, "tta": tta,
               "val_accuracy": calibrated["accuracy"], "val_log_loss": calibrated["log_loss"],
               "val_log_loss_raw": raw["log_loss"], "val_accuracy_raw": raw["accuracy"],
               "val_log_loss_no_tta": scored[False][0],
               "val_log_loss_tta": scored[True][0] if use_flip else None}

    if cfg.full:  # refit on every labeled photo with the chosen epochs and temperature
        x_all = cache.get(list(labels["path"]), ("orig",))["orig"]
        head = new_head()
        print(f"Refitting the head on all {len(x_all)} labeled photos for {best_epoch} epochs")
        head.fit(feature_dataset(x_all, labels["label"].values, num_classes, batch_size, cfg.seed),
                 epochs=best_epoch, verbose=2)
    model.apply_temperature(head, temperature)
    save_head(head, run_dir)
    return metrics


def feature_dataset(features, labels, num_classes, batch_size, seed=None):
    """In-memory features as a tf.data pipeline (shuffled when seeded): Keras re-wraps numpy
    arrays every epoch, which cost more than the head's steps themselves."""
    ds = tf.data.Dataset.from_tensor_slices((features, data.one_hot(labels, num_classes)))
    if seed is not None:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


def save_head(head, run_dir):
    with atomic_path(run_dir / "head.keras") as tmp:
        head.save(tmp)


def build_end_to_end(cfg, num_classes, strategy):
    with strategy.scope():
        backbone = model.load_backbone(cfg.model_handle, trainable=cfg.fine_tune)
        if cfg.fine_tune:
            n = model.unfreeze_top(backbone, cfg.fine_tune_layers)
            print(f"Fine-tuning: the top {cfg.fine_tune_layers} backbone layers ({n} variables) "
                  f"are trainable, learning rate {cfg.fine_tune_learning_rate}")
    # Called outside the scope: a SavedModel called eagerly in MirroredStrategy's cross-replica context fails.
    num_features = model.feature_size(backbone, cfg.image_size)
    with strategy.scope():
        head = model.build_head(num_features, num_classes, cfg)
        full_model = model.build_model(backbone, head, cfg.image_size)
        model.compile_model(full_model, cfg.fine_tune_learning_rate if cfg.fine_tune else cfg.learning_rate)
    return full_model


def train_end_to_end(cfg, run_dir, train_df, val_df, labels, num_classes):
    """Backbone in the graph: the course's pipeline, or fine-tuning its top layers."""
    strategy = model.get_strategy()
    batch_size = cfg.batch_size * strategy.num_replicas_in_sync
    if strategy.num_replicas_in_sync > 1:
        print(f"MirroredStrategy over {strategy.num_replicas_in_sync} devices, global batch {batch_size}")

    def dataset(frame, shuffle):
        return data.make_dataset(frame["path"], frame["label"].values, num_classes, cfg.image_size,
                                 batch_size, shuffle=shuffle, seed=cfg.seed)

    tf.keras.utils.set_random_seed(cfg.seed)
    full_model = build_end_to_end(cfg, num_classes, strategy)
    history = full_model.fit(dataset(train_df, True), validation_data=dataset(val_df, False),
                             epochs=cfg.num_epochs, verbose=2, callbacks=callbacks(run_dir, cfg))
    val_losses = history.history["val_loss"]
    probs = full_model.predict(dataset(val_df, False), verbose=0)
    scores = evaluate_probs(probs, val_df["label"].values, num_classes)
    metrics = {"mode": "fine-tune" if cfg.fine_tune else "end to end (frozen backbone)",
               "best_epoch": int(np.argmin(val_losses)) + 1, "epochs_run": len(val_losses),
               "val_accuracy": scores["accuracy"], "val_log_loss": scores["log_loss"],
               "temperature": 1.0, "tta": False}
    if cfg.full:  # same choices, every labeled photo, from scratch
        print(f"Refitting on all {len(labels)} labeled photos for {metrics['best_epoch']} epochs")
        tf.keras.utils.set_random_seed(cfg.seed)
        full_model = build_end_to_end(cfg, num_classes, strategy)
        full_model.fit(dataset(labels, True), epochs=metrics["best_epoch"], verbose=2)
    with atomic_path(run_dir / "model.weights.h5") as tmp:
        full_model.save_weights(str(tmp))
    return metrics
