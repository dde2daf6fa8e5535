"""TensorFlow: inputs as ``tf.Tensor`` on the case's device (``tf.constant`` under ``tf.device``);
results read through ``__array__`` or ``.numpy()``. bfloat16 crosses as ``ml_dtypes.bfloat16``,
the type TensorFlow's NumPy bridge uses."""

from __future__ import annotations

from typing import Any

from .registry import Framework


def tf_device(device: str) -> str:
    """The TensorFlow device name of a harness device: ``"cpu"`` -> ``"/CPU:0"``, ``"cuda:1"`` -> ``"/GPU:1"``."""
    kind, _, index = device.partition(":")
    return "/CPU:0" if kind == "cpu" else f"/GPU:{index or 0}"


def to_tensorflow(array: Any, device: str) -> Any:
    """``array`` (a NumPy array in the case's dtype) as a ``tf.Tensor`` on ``device``."""
    import tensorflow as tf

    with tf.device(tf_device(device)):
        return tf.constant(array)  # the dtype of the NumPy array (bfloat16: ml_dtypes', which TensorFlow maps to tf.bfloat16)


def tf_devices() -> set[str]:
    """``{"cpu"}``, plus ``"cuda"`` when TensorFlow sees a GPU."""
    import tensorflow as tf

    return {"cpu", *(["cuda"] if tf.config.list_physical_devices("GPU") else [])}


def tf_hint(case_dtype: str, got_dtype: str) -> str:
    """TensorFlow's hint for a narrower dtype than the case's."""
    return (f"with TensorFlow, a Python float or tf.constant without dtype is float32: create constants with "
            f"dtype=X.dtype (or tf.cast(..., X.dtype)) to stay in {case_dtype}")


FRAMEWORK = Framework("tensorflow", to_tensorflow, devices=tf_devices, dtype_hint=tf_hint, module="tensorflow",
                      install="pip install tensorflow", builtin=True)
