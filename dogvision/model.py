"""The network: a pretrained TF Hub backbone and a new softmax head.

The head is a separate Keras model on the backbone's features, so the same head
serves training on cached features (the fast default) and the end-to-end model
(fine-tuning, the course's pipeline), which simply stacks backbone and head.
"""
import re
from pathlib import Path

import tensorflow as tf
import tensorflow_hub as hub

from . import UserError

keras = tf.keras  # tf-keras (Keras 2), because TF_USE_LEGACY_KERAS=1 is set by the package


def resolve_handle(handle):
    """A URL as is; a local SavedModel folder as an absolute path, checked."""
    if re.match(r"^[a-z]+://", handle) or handle.startswith("gs://"):
        return handle
    path = Path(handle).expanduser()
    if not (path / "saved_model.pb").is_file():
        raise UserError(f"MODEL_HANDLE={handle} is neither a URL nor a SavedModel folder "
                        f"(no {path / 'saved_model.pb'}). Pass a TF Hub / Kaggle Models URL or a local folder.")
    return str(path.resolve())


def load_backbone(handle, trainable=False):
    """hub.KerasLayer for the handle, with an actionable error when it cannot be loaded."""
    resolved = resolve_handle(handle)
    try:
        return hub.KerasLayer(resolved, trainable=trainable, name="backbone")
    except Exception as err:  # noqa: BLE001 - hub raises many kinds (network, format, ...)
        hint = ("No internet? Download the model once and pass its folder: MODEL_HANDLE=path/to/saved_model"
                if "://" in resolved else "Is it a TF2 SavedModel in TF Hub's format?")
        raise UserError(f"Cannot load MODEL_HANDLE={handle}: {type(err).__name__}: {err}. {hint}") from err


def feature_size(backbone, image_size):
    return int(backbone(tf.zeros([1, image_size, image_size, 3]), training=False).shape[-1])


def build_head(num_features, num_classes, cfg):
    """Dropout + Dense softmax; L2 on the kernel keeps the logits from growing over-confident."""
    head = keras.Sequential([
        keras.layers.InputLayer(input_shape=(num_features,)),
        keras.layers.Dropout(cfg.dropout, seed=cfg.seed),
        keras.layers.Dense(num_classes, activation="softmax",
                           kernel_regularizer=keras.regularizers.l2(cfg.l2) if cfg.l2 else None,
                           dtype="float32", name="breed"),
    ], name="head")
    compile_model(head, cfg.learning_rate)
    return head


def build_model(backbone, head, image_size):
    """Images in [0,1] -> breed probabilities. Batch norm stays in inference mode."""
    images = keras.Input(shape=(image_size, image_size, 3), name="images")
    features = backbone(images, training=False)
    return keras.Model(images, head(tf.cast(features, tf.float32)), name="dogvision")


def compile_model(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])


def unfreeze_top(backbone, num_layers):
    """Leave only the backbone's top `num_layers` layers trainable.

    A hub.KerasLayer is one opaque SavedModel, so "layers" are the groups of its
    variables by name prefix (e.g. .../expanded_conv_16/project), in graph order.
    """
    variables = list(backbone.trainable_weights)
    groups = []
    for v in variables:
        prefix = v.name.rsplit("/", 1)[0]
        if prefix not in groups:
            groups.append(prefix)
    keep = set(groups[-num_layers:]) if num_layers > 0 else set()
    backbone._trainable_weights = [v for v in variables if v.name.rsplit("/", 1)[0] in keep]
    backbone._non_trainable_weights = ([v for v in variables if v.name.rsplit("/", 1)[0] not in keep]
                                       + list(backbone._non_trainable_weights))
    return len(backbone._trainable_weights)


def apply_temperature(head, temperature):
    """Fold a softmax temperature into the last Dense layer: softmax(z / T) == softmax((W/T) x + b/T)."""
    dense = head.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / temperature, bias / temperature])


def get_strategy():
    """MirroredStrategy over every GPU when there are several, else the default strategy."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()


def describe_devices():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"Training on {len(gpus)} GPU(s): " + ", ".join(g.name for g in gpus)
    return "No GPU found: training on the CPU."
