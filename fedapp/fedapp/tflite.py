"""Pick the TFLite interpreter available on this host, never TensorFlow itself.

Two backends run the same `.tflite` files (inference and the on-device training signatures):
tflite-runtime 2.14 (2023, the last release; Raspberry Pi OS bookworm's CPython 3.11) and its
successor ai-edge-litert. An agent venv holds one of them, chosen when it is installed
(packaging/README.md, "Which TFLite interpreter"); where both are installed tflite-runtime is
used, unless `FED_TFLITE_BACKEND` names the other (for comparing them on one host).
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata
from pathlib import Path

# backend name (the distribution pip installs) -> the module holding its Interpreter
BACKENDS = {"tflite-runtime": "tflite_runtime.interpreter", "ai-edge-litert": "ai_edge_litert.interpreter"}
BACKEND_ENV = "FED_TFLITE_BACKEND"


def _order() -> list[str]:
    wanted = os.environ.get(BACKEND_ENV, "").strip()
    if wanted and wanted not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={wanted!r}: must be one of {', '.join(BACKENDS)}")
    return [wanted] if wanted else list(BACKENDS)


def _interpreter_class():
    """(backend name, Interpreter class) of the first backend that imports."""
    errors = []
    for name in _order():
        try:
            return name, importlib.import_module(BACKENDS[name]).Interpreter
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("no TFLite interpreter: install fed-agent[tflite-runtime] or fed-agent[litert] "
                      f"({'; '.join(errors)})")


def backend() -> str:
    """`tflite-runtime 2.14.0` or `ai-edge-litert 1.4.0`: what `load_interpreter` uses here."""
    if _tensorflow() is not None:
        return f"tensorflow {_version('tensorflow')}"
    name, _ = _interpreter_class()
    return f"{name} {_version(name)}"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def _tensorflow():
    tf = sys.modules.get("tensorflow")
    return tf if tf is not None and hasattr(tf, "lite") else None


def load_interpreter(model_path: str | Path, num_threads: int = 2):
    tf = _tensorflow()
    if tf is not None:
        # Only on the coordinator, in a process that already loaded TensorFlow: two TFLite
        # runtimes in one process collide (tflite-runtime then fails with vector::reserve).
        return tf.lite.Interpreter(model_path=str(model_path), num_threads=num_threads)
    _, interpreter = _interpreter_class()
    return interpreter(model_path=str(model_path), num_threads=num_threads)
