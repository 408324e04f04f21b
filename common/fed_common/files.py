"""File helpers every process uses: atomic writes and content hashes.

Why atomic: a reader (the coordinator watching progress, the agent reading the ClientApp's
status, the ClientApp reading the inbox index) must never see half a file, and a power cut
must leave either the old file or the new one. So: a hidden temp file in the same folder,
fsync, then os.replace.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str, mode: int | None = None) -> Path:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # atomic_write's mkstemp names


def remove_stale_temp_files(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Remove what an interrupted atomic_write left under `folder` (its own temp names only).

    Call at start-up, before anything writes there: a power cut or ENOSPC mid-write leaves
    `.name.XXXXXXXX.tmp` files that nothing else would ever clean. Symlinks are not followed."""
    removed = []
    for root, dirs, names in os.walk(folder):
        if not recursive:
            dirs.clear()
        for name in names:
            path = Path(root) / name
            if _TEMP_NAME.match(name) and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable (the directory entry itself is flushed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (model files are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
