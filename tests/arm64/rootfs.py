"""The Debian bookworm arm64 root filesystem the arm64 agent test runs in (built once, cached).

Why cached: mmdebstrap of a foreign architecture runs dpkg under qemu-user emulation and
takes about 165 s; the tree only changes with its package list and options, so its name
carries a hash of them. Built under a lock (two runs starting together build it once),
into a .partial folder first and renamed (an interrupted build is never reused).
Everything lives under build/arm64/ (git-ignored). The chroots run on an overlay of the
unpacked tree (chroot.py), so nothing a test installs lands in the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from system.rootfs import debian_mirrors

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "arm64"
SUITE = "bookworm"
# What Raspberry Pi OS bookworm Lite gives the agent role: Debian's CPython 3.11 and venv.
PACKAGES = "python3,python3-venv"

def options(packages: str, variant: str) -> tuple[str, ...]:
    return ("--quiet", "--arch=arm64", f"--variant={variant}", f"--include={packages}")


def cache_key(opts: tuple[str, ...]) -> str:
    return hashlib.sha256("\0".join((SUITE, *opts)).encode()).hexdigest()[:16]


def unpacked(log=print, packages: str = PACKAGES, variant: str = "apt", name: str = "rootfs") -> Path:
    """build/arm64/NAME-KEY/ (the chroots' read-only lower layer), made by mmdebstrap when
    missing: into NAME-KEY.partial/ first, renamed when complete."""
    BUILD.mkdir(parents=True, exist_ok=True)
    opts = options(packages, variant)
    root = BUILD / f"{name}-{cache_key(opts)}"
    with open(BUILD / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir():
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        start = time.monotonic()
        proc = subprocess.run(["mmdebstrap", *opts, SUITE, str(partial), *debian_mirrors()],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"mmdebstrap --arch=arm64 failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        os.replace(partial, root)
        log(f"arm64 rootfs: built {root.name} in {time.monotonic() - start:.0f}s")
        for old in BUILD.glob(f"{name}-*"):  # keep only the current one (nothing mounts an old one)
            if old != root and old.is_dir() and f"lowerdir={old}," not in Path("/proc/mounts").read_text():
                shutil.rmtree(old, ignore_errors=True)
        return root


if __name__ == "__main__":
    print(unpacked())
