"""The TFLite head trainer that agents run with the bare TFLite interpreter.

Why hand-written backprop: the Pis have tflite-runtime only, which has no Flex ops.
`tf.GradientTape` with a dynamic batch, sparse softmax cross-entropy and `raw_ops.Save`
all need Flex, so the forward pass, the gradients of Dense(relu) -> Dense(softmax) with
cross-entropy, and the SGD-with-momentum update are written out with builtin ops only
(matmul, relu mask, log-softmax, assign). SGD with momentum (not Adam) because it stays
bit-stable between x86 and ARM interpreters (see the shared notes).

`train` takes a weight per example (`sample_weight`): the loss is sum(w * cross-entropy) / batch
size, as Keras' `sample_weight` with its default reduction, so a pseudo label can count less
than a person's label (campaign.pseudo_label_weight) and weights of 1 give the unweighted step.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import tensorflow as tf

SIGNATURES = ("train", "infer", "get_weights", "set_weights")
WEIGHT_NAMES = ("w0", "b0", "w1", "b1")


class HeadModule(tf.Module):
    """Dense(hidden, relu) + Dense(classes, softmax) with explicit SGD-momentum training."""

    def __init__(self, dim: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.dim, self.hidden, self.classes = dim, hidden, classes
        shapes = {"w0": [dim, hidden], "b0": [hidden], "w1": [hidden, classes], "b1": [classes]}
        self.weights = {n: tf.Variable(tf.zeros(s), name=n) for n, s in shapes.items()}
        self.velocity = {n: tf.Variable(tf.zeros(s), name=f"v_{n}") for n, s in shapes.items()}

        spec_x = tf.TensorSpec([None, dim], tf.float32, name="x")
        self.train = tf.function(
            self._train,
            input_signature=[
                spec_x,
                tf.TensorSpec([None], tf.int32, name="y"),
                tf.TensorSpec([None], tf.float32, name="sample_weight"),
                tf.TensorSpec([], tf.float32, name="lr"),
                tf.TensorSpec([], tf.float32, name="momentum"),
            ],
        )
        self.infer = tf.function(self._infer, input_signature=[spec_x])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        self.set_weights = tf.function(
            self._set_weights,
            input_signature=[tf.TensorSpec(s, tf.float32, name=n) for n, s in shapes.items()],
        )

    def _forward(self, x):
        w = self.weights
        h_pre = tf.matmul(x, w["w0"]) + w["b0"]
        h = tf.nn.relu(h_pre)
        logits = tf.matmul(h, w["w1"]) + w["b1"]
        return h_pre, h, logits

    def _train(self, x, y, sample_weight, lr, momentum):
        h_pre, h, logits = self._forward(x)
        log_probs = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
        onehot = tf.one_hot(y, self.classes, dtype=tf.float32)
        n = tf.cast(tf.shape(x)[0], tf.float32)
        weight = tf.expand_dims(sample_weight, 1)
        loss = -tf.reduce_sum(weight * onehot * log_probs) / n
        d_logits = weight * (tf.exp(log_probs) - onehot) / n
        grads = {
            "w1": tf.matmul(h, d_logits, transpose_a=True),
            "b1": tf.reduce_sum(d_logits, axis=0),
        }
        d_h = tf.matmul(d_logits, self.weights["w1"], transpose_b=True)
        d_h = d_h * tf.cast(h_pre > 0.0, tf.float32)
        grads["w0"] = tf.matmul(x, d_h, transpose_a=True)
        grads["b0"] = tf.reduce_sum(d_h, axis=0)
        for name in WEIGHT_NAMES:
            # Keras SGD(momentum): v = m*v - lr*g ; w = w + v
            v = self.velocity[name]
            v.assign(momentum * v - lr * grads[name])
            self.weights[name].assign_add(v)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32)
        )
        return {"loss": loss, "correct": correct}

    def _infer(self, x):
        _, _, logits = self._forward(x)
        return {"probabilities": tf.nn.softmax(logits)}

    def _get_weights(self):
        return {name: tf.identity(self.weights[name]) for name in WEIGHT_NAMES}

    def _set_weights(self, w0, b0, w1, b1):
        for name, value in zip(WEIGHT_NAMES, (w0, b0, w1, b1)):
            self.weights[name].assign(value)
            self.velocity[name].assign(tf.zeros_like(value))
        return {"ok": tf.constant(1.0)}


def export_head_trainer(path: Path, dim: int = 1280, hidden: int = 128, classes: int = 2) -> bytes:
    """Convert the head trainer to a builtin-ops-only TFLite flatbuffer and write it to path."""
    module = HeadModule(dim, hidden, classes)
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(
            module,
            tmp,
            signatures={
                "train": module.train.get_concrete_function(),
                "infer": module.infer.get_concrete_function(),
                "get_weights": module.get_weights.get_concrete_function(),
                "set_weights": module.set_weights.get_concrete_function(),
            },
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(SIGNATURES))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        data = converter.convert()
    Path(path).write_bytes(data)
    return data
