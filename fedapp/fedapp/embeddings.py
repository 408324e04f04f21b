"""Backbone embeddings computed once per image with the TFLite backbone, cached on disk.

The backbone is frozen for a whole campaign (and usually for months), so running it every
epoch, as a Keras fit through the full model does, is wasted work on a Pi. The cache key is
(backbone hash, image hash): a new backbone or a changed photo can never reuse a stale vector.

Two writers fill the same cache with the same key: the ClientApp (what a round needs and does
not find) and the agent's embedder (fed_agent.embedder: each image the store holds, at ingest,
with the last campaign's backbone), so a round usually only reads vectors. An entry is only
ever written for bytes whose SHA-256 is its name, so either writer's vector is the right one.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fed_common.files import atomic_write, sha256_bytes

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

    def path_of(self, digest: str) -> Path:
        return self.dir / f"{digest}.npy"

    def has(self, digest: str) -> bool:
        """Is the image with this SHA-256 embedded already (one stat, the file is not read)?"""
        return self.path_of(digest).is_file()

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        if self._interpreter is None:
            self._interpreter = load_interpreter(self.backbone_path)
            self._interpreter.allocate_tensors()
        interp = self._interpreter
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], pixels[None].astype(np.float32))
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])[0].copy()

    def _cached(self, digest: str) -> np.ndarray | None:
        target = self.path_of(digest)
        if not target.is_file():
            return None
        try:
            return np.load(target)
        except (OSError, ValueError):
            target.unlink(missing_ok=True)  # our own corrupt cache entry, recompute
            return None

    def compute(self, data: bytes, digest: str, source: str = "<bytes>") -> np.ndarray:
        """Decode and embed `data` (whose SHA-256 is `digest`) and store the vector under it.
        ValueError (naming `source`) for bytes that are not an image."""
        vec = self._embed(decode_image(data, source)).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, vec)
        atomic_write(self.path_of(digest), buf.getvalue())
        self.computed += 1
        return vec

    def get(self, item: LabeledFile) -> np.ndarray:
        """The item's vector: from the cache, else computed from its bytes. An item whose
        bytes were not read (node_data: the index said it is cached) and whose entry vanished
        or is corrupt is read now and checked against its hash first."""
        vec = self._cached(item.digest)
        if vec is not None:
            self.reused += 1
            return vec
        data = item.data or _read_checked(item.path, item.digest)
        return self.compute(data, item.digest, str(item.path))

    def matrix(self, items: list[LabeledFile]) -> tuple[np.ndarray, np.ndarray]:
        if not items:
            return np.zeros((0, 0), np.float32), np.zeros((0,), np.int32)
        x = np.stack([self.get(item) for item in items]).astype(np.float32)
        y = np.array([item.label for item in items], dtype=np.int32)
        return x, y


def _read_checked(path: Path, digest: str) -> bytes:
    data = path.read_bytes()
    if sha256_bytes(data) != digest:
        raise ValueError(f"{path}: content changed since the inbox stored it (SHA-256 differs from the index)")
    return data
