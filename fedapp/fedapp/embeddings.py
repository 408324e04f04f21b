"""Backbone embeddings computed once per image with the TFLite backbone, cached on disk.

The backbone is frozen for a whole campaign (and usually for months), so running it every
epoch, as a Keras fit through the full model does, is wasted work on a Pi. The cache key is
(backbone hash, image hash): a new backbone or a changed photo can never reuse a stale vector.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fed_common.files import atomic_write

from .images import LabeledFile, decode_image
from .tflite import load_interpreter


class EmbeddingCache:
    def __init__(self, cache_dir: str | Path, backbone_path: str | Path, backbone_sha: str) -> None:
        self.dir = Path(cache_dir) / f"emb-{backbone_sha[:16]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.backbone_path = Path(backbone_path)
        self._interpreter = None
        self.computed = 0
        self.reused = 0

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        if self._interpreter is None:
            self._interpreter = load_interpreter(self.backbone_path)
            self._interpreter.allocate_tensors()
        interp = self._interpreter
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], pixels[None].astype(np.float32))
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])[0].copy()

    def get(self, item: LabeledFile) -> np.ndarray:
        target = self.dir / f"{item.digest}.npy"
        if target.is_file():
            try:
                vec = np.load(target)
                self.reused += 1
                return vec
            except (OSError, ValueError):
                target.unlink(missing_ok=True)  # our own corrupt cache entry, recompute
        vec = self._embed(decode_image(item.data, str(item.path))).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, vec)
        atomic_write(target, buf.getvalue())
        self.computed += 1
        return vec

    def matrix(self, items: list[LabeledFile]) -> tuple[np.ndarray, np.ndarray]:
        if not items:
            return np.zeros((0, 0), np.float32), np.zeros((0,), np.int32)
        x = np.stack([self.get(item) for item in items]).astype(np.float32)
        y = np.array([item.label for item in items], dtype=np.int32)
        return x, y
