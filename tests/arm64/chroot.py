"""An arm64 chroot for one test: an overlay on the cached rootfs, run through qemu-user.

Why a chroot and not a booted host: the agent's code paths under test (offline install,
validate-config, the ClientApp, predict) need Debian's arm64 userland, not systemd, and a
chroot costs nothing to start. Why an overlay: the venv the test installs must not land in
the cached rootfs (the next run installs again, as a fresh Pi would). Host folders are
bound at the SAME path inside, so a config or an argv written on the host is valid in the
chroot too, and the x86 and arm64 runs take the very same arguments.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

BINFMT = Path("/proc/sys/fs/binfmt_misc")
# A minimal environment: nothing from the host's venvs or pip config leaks in.
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "LANG": "C.UTF-8", "PIP_CONFIG_FILE": "/dev/null", "PYTHONDONTWRITEBYTECODE": "1"}


def missing_prerequisites() -> str | None:
    """Why the arm64 chroot cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (chroot, overlay and bind mounts)"
    if not (BINFMT / "status").is_file():
        return f"needs binfmt_misc mounted at {BINFMT} (run tests/system/setup.sh as root)"
    entry = BINFMT / "qemu-aarch64"
    if not entry.is_file() or not entry.read_text().startswith("enabled"):
        return "needs the qemu-aarch64 binfmt entry (apt-get install qemu-user-static binfmt-support)"
    if "flags: " in entry.read_text() and "F" not in entry.read_text().split("flags: ")[1].split()[0]:
        return "the qemu-aarch64 binfmt entry lacks the F flag (a chroot cannot find qemu)"
    for tool in ("mmdebstrap", "arch-test"):
        if not shutil.which(tool):
            return f"needs {tool} (apt-get install {tool}; tests/system/setup.sh installs it)"
    return None


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def arm64_chroot(lower: Path, work: Path, binds: dict[Path, bool]):
    """Yield the merged root; `binds` maps host folders to read_only (bound at the same path)."""
    for sub in ("upper", "ovl", "root"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    root = work / "root"
    mounts: list[Path] = []
    try:
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'ovl'}", str(root))
        mounts.append(root)
        # /sys too: without it TFLite's cpuinfo cannot read the processor list.
        for fs in ("proc", "dev", "sys"):
            _mount("--rbind" if fs != "proc" else "--bind", f"/{fs}", str(root / fs))
            mounts.append(root / fs)
        for host, read_only in binds.items():
            inside = root / str(host).lstrip("/")
            inside.mkdir(parents=True, exist_ok=True)
            _mount("--bind", str(host), str(inside))
            mounts.append(inside)
            if read_only:
                _mount("-o", "remount,bind,ro", str(inside))
        yield root
    finally:
        for path in reversed(mounts):
            if subprocess.run(["umount", "-R", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-R", "-l", str(path)], capture_output=True)


def run_in(root: Path, argv: list[str], timeout: float,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """`argv` inside the chroot (an arm64 process under qemu-user, ENV plus `env`), output
    captured as text."""
    return subprocess.run(["chroot", str(root), *argv], env={**ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
