"""The network: a pretrained TF Hub backbone and a new softmax head.

The head is a separate Keras model on the backbone's features, so the same head
serves training on cached features (the fast default) and the end-to-end model
(fine-tuning, the course's pipeline), which simply stacks backbone and head.
"""
import os
import re
from pathlib import Path

import tensorflow as tf
import tensorflow_hub as hub

from . import UserError

keras = tf.keras  # tf-keras (Keras 2), because TF_USE_LEGACY_KERAS=1 is set by the package


HEAD_STEPS_PER_EXECUTION = 16  # the head's steps take microseconds; Keras' per-step overhead dominated


def resolve_handle(handle):
    """A URL as is; a local SavedModel folder as an absolute path, checked."""
    if re.match(r"^[a-z]+://", handle) or handle.startswith("gs://"):
        return handle
    path = Path(handle).expanduser()
    if not (path / "saved_model.pb").is_file():
        raise UserError(f"MODEL_HANDLE={handle} is neither a URL nor a SavedModel folder "
                        f"(no {path / 'saved_model.pb'}). Pass a TF Hub / Kaggle Models URL or a local folder.")
    return str(path.resolve())


class Backbone(hub.KerasLayer):
    """hub.KerasLayer whose trainable variables can be narrowed to its top layers.

    A hub.KerasLayer is one opaque SavedModel: trainable=True makes every variable
    trainable. Fine-tuning wants only the top ones, so `trainable_names` (when set)
    filters the variables that Keras' optimizer sees.
    """

    trainable_names = None

    @property
    def trainable_weights(self):
        weights = super().trainable_weights
        if self.trainable_names is None:
            return weights
        return [w for w in weights if w.name in self.trainable_names]

    @property
    def non_trainable_weights(self):
        frozen = []
        if self.trainable and self.trainable_names is not None:
            frozen = [w for w in super().trainable_weights if w.name not in self.trainable_names]
        return frozen + super().non_trainable_weights


def load_backbone(handle, trainable=False):
    """The backbone layer for a handle, with an actionable error when it cannot be loaded."""
    resolved = resolve_handle(handle)
    try:
        return Backbone(resolved, trainable=trainable, name="backbone", dtype="float32")
    except Exception as err:  # noqa: BLE001 - hub raises many kinds (network, format, ...)
        hint = ("No internet? Download the model once and pass its folder: MODEL_HANDLE=path/to/saved_model"
                if "://" in resolved else "Is it a TF2 SavedModel in TF Hub's format?")
        raise UserError(f"Cannot load MODEL_HANDLE={handle}: {type(err).__name__}: {err}. {hint}") from err


def feature_size(backbone, image_size):
    return int(backbone(tf.zeros([1, image_size, image_size, 3]), training=False).shape[-1])


def build_head(num_features, num_classes, cfg, normalize=False, learning_rate=None):
    """[unit length] + Dropout + Dense softmax; L2 on the kernel keeps the logits from growing over-confident.

    normalize=True (the head on cached features) scales each feature vector to unit
    length first: measured on Stanford Dogs it gives lower validation log loss than the
    raw vectors at any L2 strength, since the photo's overall activation level says
    little about its breed.
    """
    layers = [keras.layers.InputLayer(input_shape=(num_features,))]
    if normalize:
        layers.append(keras.layers.UnitNormalization(name="unit_length"))
    layers += [keras.layers.Dropout(cfg.dropout, seed=cfg.seed),
               keras.layers.Dense(num_classes, activation="softmax",
                                  kernel_regularizer=keras.regularizers.l2(cfg.l2) if cfg.l2 else None,
                                  dtype="float32", name="breed")]
    head = keras.Sequential(layers, name="head")
    compile_model(head, learning_rate or cfg.learning_rate, HEAD_STEPS_PER_EXECUTION)
    return head


def build_model(backbone, head, image_size):
    """Images in [0,1] -> breed probabilities. Batch norm stays in inference mode."""
    images = keras.Input(shape=(image_size, image_size, 3), name="images")
    features = backbone(images, training=False)
    return keras.Model(images, head(tf.cast(features, tf.float32)), name="dogvision")


def compile_model(model, learning_rate, steps_per_execution=1):
    """Adam + cross-entropy. Several steps per execution: the same updates, less Python per step."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)


def unfreeze_top(backbone, num_layers):
    """Leave only the backbone's top `num_layers` layers trainable; return the variable count.

    "Layers" are the groups of the SavedModel's variables by name prefix
    (e.g. .../expanded_conv_16/project), in graph order.
    """
    variables = list(backbone.trainable_weights)
    groups = list(dict.fromkeys(v.name.rsplit("/", 1)[0] for v in variables))
    keep = set(groups[-num_layers:]) if num_layers > 0 else set()
    backbone.trainable_names = {v.name for v in variables if v.name.rsplit("/", 1)[0] in keep}
    return len(backbone.trainable_names)


def apply_temperature(head, temperature):
    """Fold a softmax temperature into the last Dense layer: softmax(z / T) == softmax((W/T) x + b/T)."""
    dense = head.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / temperature, bias / temperature])


def get_strategy():
    """MirroredStrategy over several devices, else the default strategy (one GPU or the CPU).

    The devices are every GPU when there are more than one, or DOGVISION_DEVICES (e.g.
    "/cpu:0,/cpu:1", which splits the CPU into that many logical devices so the
    multi-device path runs anywhere; it must be set before TensorFlow starts).
    """
    wanted = [d.strip() for d in os.environ.get("DOGVISION_DEVICES", "").split(",") if d.strip()]
    cpu_indices = [int(m.group(1)) for d in wanted if (m := re.fullmatch(r"(?i)/?(?:device:)?cpu:(\d+)", d))]
    if cpu_indices:
        split_cpu(max(cpu_indices) + 1)
    devices = wanted or [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def split_cpu(count):
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) >= count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:
        raise UserError(f"DOGVISION_DEVICES asks for {count} CPU devices, but TensorFlow had already "
                        "started; set it in the environment before running the command.") from err


def use_mixed_precision():
    """float16 compute where it is safe and fast: GPUs with compute capability >= 7.0 (tensor cores).

    The head's softmax Dense stays float32 (its dtype), and so does the TF Hub backbone.
    """
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0) for g in gpus]
    if not gpus or min(capabilities) < (7, 0):
        return False
    keras.mixed_precision.set_global_policy("mixed_float16")
    print("Mixed precision: float16 compute, float32 variables and softmax (GPU compute capability >= 7.0)")
    return True


def describe_devices():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"Training on {len(gpus)} GPU(s): " + ", ".join(g.name for g in gpus)
    return "No GPU found: training on the CPU."
