"""The classifier: a frozen MobileNetV2 backbone with preprocessing inside, plus a small head.

Only the coordinator imports this (it needs TensorFlow). What leaves it for the agents are
TFLite flatbuffers: the backbone (RGB pixels in, 1280-d embedding out) and the head trainer.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

# The converter's deprecation chatter says nothing an operator can act on.
logging.getLogger("absl").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")

IMAGE_SIZE = 160
EMBEDDING_DIM = 1280
HIDDEN_UNITS = 128


def build_backbone(weights: str) -> keras.Model:
    """RGB pixels in [0, 255] -> MobileNetV2 features -> global average pooling.

    `weights` is "imagenet" (downloads, needs internet) or a path to a no-top weights file.
    The rescaling to [-1, 1] lives inside the model so every exported artifact takes raw pixels.
    """
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(f"backbone weights file not found: {weights}")
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=1.0, include_top=False, weights=weights
    )
    base.trainable = False
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="backbone")


def build_classifier(backbone: keras.Model, head_weights: Sequence[np.ndarray], num_classes: int) -> keras.Model:
    """Backbone + Dense(128, relu) + Dense(classes, softmax) carrying the federated head weights."""
    hidden = keras.layers.Dense(HIDDEN_UNITS, activation="relu", name="head_hidden")
    out = keras.layers.Dense(num_classes, activation="softmax", name="head_out")
    probs = out(hidden(backbone.output))
    model = keras.Model(backbone.input, probs, name="classifier")
    w0, b0, w1, b1 = head_weights
    hidden.set_weights([w0, b0])
    out.set_weights([w1, b1])
    return model


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    # Freeze variables into constants: a converter over resource variables fails in
    # int8 calibration (READ_VARIABLE), and the deployed models need no variables anyway.
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


def to_tflite_float32(model: keras.Model) -> bytes:
    return _converter(model).convert()


def to_tflite_int8(model: keras.Model, calibration: Iterable[np.ndarray]) -> bytes:
    """Full-integer weights and activations; float32 pixels in and probabilities out."""
    samples = [np.asarray(s, np.float32)[None] for s in calibration]
    if not samples:
        raise ValueError("int8 export needs at least one calibration image")
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()
