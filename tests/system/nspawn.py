"""Low-level pieces of the nspawn harness: bridge, mounts, cgroups, container leaders, locks.

Why separate: hosts.py reads as the story (prepare, boot, wait, tear down); the system
facts it relies on (see /work/shared/notes/system-test-harness.md) live here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
NSPAWN_RUN = Path("/run/systemd/nspawn")


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def deadline_wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def bridge_up(bridge: str, subnet: str) -> None:
    """The hosts' private /24 (SUBNET.1 here). No NAT, no forwarding rules, and the hosts get
    no gateway: nothing beyond the bridge is reachable from them."""
    if Path(f"/sys/class/net/{bridge}").exists():
        brif = Path(f"/sys/class/net/{bridge}/brif")
        with contextlib.suppress(TimeoutError):  # reaped hosts' veths go away with their nspawn
            deadline_wait(lambda: not any(brif.iterdir()), 15, f"{bridge} to lose its ports")
        ports = list(brif.iterdir())
        if ports:
            raise RuntimeError(f"bridge {bridge} exists with ports {[p.name for p in ports]}: "
                               "another system test is running (or left hosts behind)")
        run(["ip", "link", "del", bridge])
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


def unmount(path: Path) -> None:
    if mounted(path) and run(["umount", str(path)], check=False).returncode != 0:
        run(["umount", "-l", str(path)], check=False)  # busy: detach now, freed when idle


def cgroup_remove(path: Path) -> None:
    """rmdir a cgroup tree bottom-up (the container's systemd made sub-cgroups in it)."""
    if not path.is_dir():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        cgroup_remove(child)
    with contextlib.suppress(OSError):
        path.rmdir()


def find_leader(nspawn_pid: int) -> int:
    """The child of nspawn that is PID 1 of a new PID namespace (the container's init)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            nspid = fields.get("NSpid", "").split()
            if int(fields.get("PPid", 0)) == nspawn_pid and len(nspid) > 1 and nspid[-1] == "1":
                return int(nspid[0])
    return 0


def is_leader_of(pid: int, name: str) -> bool:
    """True while `pid` is PID 1 of a PID namespace and sits in our cgroup for host `name`."""
    with contextlib.suppress(OSError, ValueError):
        status = Path(f"/proc/{pid}/status").read_text()
        nspid = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()
        cgroups = [line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
        ours = any(c[1] == "name=systemd" and (c[2] == f"/{name}" or c[2].startswith(f"/{name}/"))
                   for c in cgroups if len(c) == 3)
        return nspid[-1] == "1" and len(nspid) > 2 and ours
    return False


def stop_leader(pid: int, name: str, grace: float) -> None:
    """Power a container off by its leader PID (SIGRTMIN+4 = poweroff), then SIGKILL it."""
    if pid <= 1 or not is_leader_of(pid, name):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGRTMIN + 4)
    with contextlib.suppress(TimeoutError):
        deadline_wait(lambda: not is_leader_of(pid, name), grace, f"poweroff of {name} (pid {pid})")
    if is_leader_of(pid, name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def exclusive(lock_dir: Path, keys: list[str]):
    """Lock the bridge and each host name (locks die with their process): runs with other
    names and another bridge may go on in parallel, a second run on the same ones may not."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for key in keys:
            fh = stack.enter_context(open(lock_dir / f".lock-{key}", "w"))
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another system test is using {key!r} (it holds {fh.name})") from None
        yield
