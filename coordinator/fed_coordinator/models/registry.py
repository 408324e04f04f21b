"""Model registry: one folder per version, made visible only when complete.

A version is built in a hidden `.incoming-*` folder, every file fsynced, metadata.json
(with the hashes of the other files) written last, then the folder is renamed to `vNNNN`.
A crash leaves at most an `.incoming-*` folder, which readers never list and the next
registration removes: a half-written model can never look complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from fed_common.files import atomic_write, fsync_dir, sha256_file

VERSION_RE = re.compile(r"^v(\d{4,})$")
METADATA = "metadata.json"


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _lock(self):
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def cleanup(self) -> list[str]:
        """Remove what a crash mid-registration left (never visible as a model anyway)."""
        removed = []
        with self._lock():
            for stale in self.root.glob(".incoming-*"):
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale.name)
        return removed

    def versions(self) -> list[int]:
        found = []
        for child in self.root.iterdir():
            m = VERSION_RE.match(child.name)
            if m and (child / METADATA).is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def path(self, version: int) -> Path:
        return self.root / f"v{version:04d}"

    def latest(self) -> Path | None:
        versions = self.versions()
        return self.path(versions[-1]) if versions else None

    def metadata(self, version: int) -> dict:
        return json.loads((self.path(version) / METADATA).read_text())

    def register(self, build: Callable[[Path], dict]) -> tuple[int, Path]:
        """`build(folder)` writes the model files into folder and returns metadata fields."""
        with self._lock():
            for stale in self.root.glob(".incoming-*"):
                shutil.rmtree(stale, ignore_errors=True)
            existing = [int(m.group(1)) for c in self.root.iterdir() if (m := VERSION_RE.match(c.name))]
            version = max(existing, default=0) + 1
            incoming = self.root / f".incoming-v{version:04d}"
            incoming.mkdir()
            try:
                fields = build(incoming)
                files = {}
                for f in sorted(incoming.iterdir()):
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
                    files[f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
                meta = {"version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **fields, "files": files}
                atomic_write(incoming / METADATA, json.dumps(meta, indent=2, sort_keys=True))
                final = self.path(version)
                os.replace(incoming, final)
                fsync_dir(self.root)
            except BaseException:
                shutil.rmtree(incoming, ignore_errors=True)
                raise
        return version, final
