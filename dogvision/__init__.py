"""DogVision: transfer learning for Kaggle's Dog Breed Identification.

tensorflow-hub's KerasLayer only works with Keras 2 (tf-keras), and TensorFlow
reads TF_USE_LEGACY_KERAS when it is first imported, so it is set here, before
any module of the package imports TensorFlow.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


class UserError(Exception):
    """A mistake the user can fix; the CLI prints the message, no traceback."""
