"""Listing and reading the inbox without ever leaving it (the inbox's walk, by itself).

Why its own module: what a camera program may write where (ignored names) and how files
are reached (each folder held open, nothing followed through a symlink) is one concern;
what becomes of a file (filed, quarantined) is the inbox's. The walk is `os.fwalk` from an
open inbox folder: every stat, open (O_NOFOLLOW) and rename is made relative to the folder
it was listed in, so a folder swapped for a symlink between listing and moving cannot make
the agent touch a file outside the state folder.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def is_ignored(name: str) -> bool:
    """Names a writer uses while a file is incomplete (and hidden files): never touched."""
    return name.startswith(".") or name.lower().endswith((".part", ".tmp"))


@dataclass(frozen=True)
class Waiting:
    """A file waiting in the inbox: its name inside an open folder (`dir_fd`), the path a
    person would use (for logs and notes only), and its top-level folder (None: loose)."""

    dir_fd: int
    name: str
    path: Path
    folder: Optional[str]


def waiting_files(inbox_dir: Path) -> Iterator[Waiting]:
    """Each file waiting, in a stable order, with its folder held open while it is used."""
    top = os.open(inbox_dir, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for name in sorted(os.listdir(top)):
            if is_ignored(name):
                continue
            st = os.stat(name, dir_fd=top, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                yield Waiting(top, name, inbox_dir / name, None)
                continue
            # fwalk opens each folder without following symlinks and checks it is the one
            # listed, so a swapped-in symlink is never entered
            for root, dirs, names, root_fd in os.fwalk(name, dir_fd=top, follow_symlinks=False):
                dirs[:] = sorted(d for d in dirs if not is_ignored(d))
                for file_name in sorted(names):
                    if not is_ignored(file_name):
                        yield Waiting(root_fd, file_name, inbox_dir / root / file_name, name)
    finally:
        os.close(top)


def read_waiting(item: Waiting, st: os.stat_result, max_bytes: int) -> Optional[bytes]:
    """The file's bytes (at most max_bytes + 1), or None when it changed since its stat."""
    fd = os.open(item.name, _OPEN_FLAGS, dir_fd=item.dir_fd)
    with os.fdopen(fd, "rb") as fh:
        if not os.path.samestat(st, os.fstat(fd)):
            return None
        return fh.read(max_bytes + 1)  # + 1: notices a file that grew since the stat
