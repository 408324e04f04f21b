"""Campaign artifacts (TFLite backbone and head trainer) addressed by content hash.

Agents keep them in a cache folder named by SHA-256, so a backbone that did not change since
last night is not sent again: the ServerApp asks which hashes a node lacks and ships only those.
"""

from __future__ import annotations

from pathlib import Path

from fed_common.files import atomic_write, sha256_bytes, sha256_file

__all__ = ["ARTIFACT_NAMES", "ArtifactStore", "sha256_file"]  # sha256_file: coordinator imports it here

ARTIFACT_NAMES = ("backbone", "trainer")


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "artifacts"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        return self.root / f"{sha}.tflite"

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, data: bytes, expected_sha: str) -> Path:
        """Store shipped bytes under their hash; refuse bytes that do not match it."""
        actual = sha256_bytes(data)
        if actual != expected_sha:
            raise ValueError(f"artifact hash mismatch: expected {expected_sha}, got {actual}")
        target = self.path(expected_sha)
        if not target.is_file():
            atomic_write(target, data)
        return target

    def require(self, sha: str) -> Path:
        if not self.has(sha):
            raise FileNotFoundError(f"artifact {sha[:12]} not in the agent cache {self.root}")
        return self.path(sha)
