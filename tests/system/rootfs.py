"""The Debian bookworm root filesystem the system-test hosts boot (built once, then cached).

Why cached: mmdebstrap takes about a minute and needs the Debian mirror; the tarball only
changes when the package list, the customize hook or the test SSH key changes, so its name
carries a hash of those three. Everything lives under build/system/ (git-ignored).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "system"
HOOK = Path(__file__).with_name("customize.sh")
SUITE = "bookworm"
PACKAGES = ("systemd,systemd-sysv,dbus,openssh-server,python3,python3-venv,iproute2,sudo,"
            "ca-certificates,nginx,nftables,openssl,curl,procps,less,"
            # the Ansible pip module imports `packaging` on the target (the hosts have no apt access)
            "python3-packaging")


def ssh_key() -> Path:
    """The controller's private key for root@host (generated once; the rootfs trusts it)."""
    key = BUILD / "id_ed25519"
    if not key.is_file():
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".new")
        for stale in (tmp, tmp.with_suffix(".new.pub")):
            stale.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fedfleet-system-test",
                        "-f", str(tmp)], check=True)
        os.replace(f"{tmp}.pub", f"{key}.pub")
        os.replace(tmp, key)
    return key


def debian_mirrors(sources: Path = Path("/etc/apt")) -> list[str]:
    """`deb URI SUITE COMPONENTS` lines for bookworm* from apt's own sources (one-line or deb822).

    Why: this machine (and CI) may only reach the mirror apt is configured with.
    """
    entries: list[tuple[str, list[str], str]] = []
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                    for uri in fields.get("URIs", "").split():
                        entries.append((uri, fields.get("Suites", "").split(), fields.get("Components", "main")))
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
                if m:
                    entries.append((m.group(1), [m.group(2)], m.group(3)))
    lines = [f"deb {uri} {suite} {comps.strip() or 'main'}" for uri, suites, comps in entries
             for suite in suites if suite == SUITE or suite.startswith(SUITE + "-")]
    return list(dict.fromkeys(lines)) or [f"deb http://deb.debian.org/debian {SUITE} main"]


def _options() -> list[str]:
    # cleanup/reproducible would delete the dbus machine-id symlink (it resolves on the
    # build machine); the hook empties /etc/machine-id itself.
    return ["--quiet", "--variant=minbase", f"--include={PACKAGES}", "--skip=cleanup/reproducible",
            f"--customize-hook=sh {HOOK} \"$1\" {ssh_key()}.pub"]


def cache_key() -> str:
    """Hash of the package list, the mmdebstrap options, the hook script and the SSH key."""
    pub = Path(f"{ssh_key()}.pub").read_bytes()
    parts = [PACKAGES.encode(), " ".join(_options()).encode(), HOOK.read_bytes(), pub]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def tarball(log=print) -> Path:
    """Path of the cached rootfs tarball, building it with mmdebstrap when missing."""
    out = BUILD / f"rootfs-{cache_key()}.tar.zst"
    if out.is_file():
        return out
    tmp = out.with_name(out.name.replace(".tar.zst", ".partial.tar.zst"))
    tmp.unlink(missing_ok=True)
    cmd = ["mmdebstrap", *_options(), SUITE, str(tmp), *debian_mirrors()]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    os.replace(tmp, out)
    log(f"rootfs: built {out.name} ({out.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - start:.0f}s")
    for old in BUILD.glob("rootfs-*.tar.zst"):  # keep only the current one
        if old != out:
            old.unlink()
    return out


def unpacked(log=print) -> Path:
    """The tarball unpacked once into build/system/rootfs-KEY/ (the hosts' read-only lower layer).

    Serialised with a lock: two test runs starting together build and unpack it once."""
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _unpacked(log)


def _unpacked(log) -> Path:
    tar = tarball(log)
    root = BUILD / tar.name.replace(".tar.zst", "")
    stamp = root.with_name(root.name + ".complete")
    if stamp.is_file() and root.is_dir():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.monotonic()
    subprocess.run(["tar", "--zstd", "-xpf", str(tar), "-C", str(root), "--numeric-owner",
                    "--xattrs", "--xattrs-include=*"], check=True)
    stamp.touch()
    log(f"rootfs: unpacked in {time.monotonic() - start:.1f}s")
    in_use = Path("/proc/mounts").read_text()
    for old in BUILD.glob("rootfs-*"):
        if old.is_dir() and old != root and f"lowerdir={old}," not in in_use:  # not under live hosts
            shutil.rmtree(old, ignore_errors=True)
            old.with_name(old.name + ".complete").unlink(missing_ok=True)
    return root


if __name__ == "__main__":
    print(unpacked())
