"""Pick the TFLite interpreter available on this host, never TensorFlow itself.

tflite-runtime 2.14 is the primary runtime (Raspberry Pi OS bookworm, CPython <= 3.11);
ai-edge-litert is its successor and the fallback where tflite-runtime has no wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path


def load_interpreter(model_path: str | Path, num_threads: int = 2):
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "lite"):
        # Only on the coordinator, in a process that already loaded TensorFlow: two TFLite
        # runtimes in one process collide (tflite-runtime then fails with vector::reserve).
        return tf.lite.Interpreter(model_path=str(model_path), num_threads=num_threads)
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - depends on the host
            raise ImportError(
                "no TFLite interpreter: install tflite-runtime==2.14.0 or ai-edge-litert"
            ) from exc
    return Interpreter(model_path=str(model_path), num_threads=num_threads)
