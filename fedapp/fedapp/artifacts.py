"""Campaign artifacts (TFLite backbone and head trainer) addressed by content hash.

Agents keep them in a cache folder named by SHA-256, so a backbone that did not change since
last night is not sent again: the ServerApp asks which hashes a node lacks and ships only those.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

ARTIFACT_NAMES = ("backbone", "trainer")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "artifacts"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        return self.root / f"{sha}.tflite"

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, data: bytes, expected_sha: str) -> Path:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha:
            raise ValueError(f"artifact hash mismatch: expected {expected_sha}, got {actual}")
        target = self.path(expected_sha)
        if target.is_file():
            return target
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return target

    def require(self, sha: str) -> Path:
        if not self.has(sha):
            raise FileNotFoundError(f"artifact {sha[:12]} not in the agent cache {self.root}")
        return self.path(sha)
