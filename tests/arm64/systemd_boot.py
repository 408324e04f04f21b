"""How long an arm64 Debian host takes to boot systemd under qemu-user (a measurement, not a test).

    cd tests && ../.venv/bin/python -m arm64.systemd_boot [--timeout 600]

Why: the system test's Pis are x86 systemd-nspawn hosts (tests/system/hosts.py); one of them
could be arm64 only if systemd boots under qemu-user emulation in acceptable time. This boots
`systemd-nspawn --boot` on an overlay of an arm64 rootfs with systemd (built once, cached
under build/arm64/), the way hosts.py boots the x86 ones (own cgroups, tmpfs on
/run/systemd/nspawn), then asks `systemctl is-system-running` inside (nsenter) until it
answers running or degraded, and prints the seconds that took and the failed units.

Measured here (Debian bookworm arm64, systemd 252, qemu-user-static 7.2, 2 loaded cores):
`degraded` after 2.2, 9.8 and 6.4 s (three runs), multi-user.target reached, four units
failed: systemd-sysctl, systemd-sysusers, systemd-tmpfiles-setup and -setup-dev, each
"Failed at step CREDENTIALS ...: Invalid argument" (setting up a unit's credentials fails
under qemu-user); `systemctl poweroff` inside stops it in 1.8 s. The x86 hosts come up
"running" in about a second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from system.nspawn import CGROUP_ROOTS, NSPAWN_RUN, cgroup_remove, find_leader, mounted, run, stop_leader

from .rootfs import unpacked

NAME = "arm64boot"
PACKAGES = "systemd,systemd-sysv,dbus,python3"


def state(leader: int) -> str:
    proc = run(["nsenter", "-t", str(leader), "-a", "systemctl", "is-system-running"], check=False, timeout=60)
    return proc.stdout.strip() or proc.stderr.strip()[-200:]


def power_off(proc: subprocess.Popen, leader: int, figures: dict) -> None:
    """`systemctl poweroff` inside, not hosts.py's SIGRTMIN+4 to the leader: qemu-user maps the
    real-time signals (the guest's SIGRTMIN+4 is not the host's), so that signal sent the
    emulated systemd into emergency mode instead. SIGKILL (stop_leader) if it does not stop."""
    start = time.monotonic()
    run(["nsenter", "-t", str(leader), "-a", "systemctl", "poweroff", "--no-block"], check=False, timeout=60)
    try:
        proc.wait(timeout=60)
        figures["poweroff seconds"] = round(time.monotonic() - start, 1)
    except subprocess.TimeoutExpired:
        figures["poweroff seconds"] = "did not stop in 60 s (killed)"
        stop_leader(leader, NAME, 5)


def boot(lower: Path, work: Path, timeout: float) -> dict:
    """Boot, wait for an answer that is not starting/initializing, power off; the figures."""
    for sub in ("upper", "ovl", "root"):
        (work / sub).mkdir(parents=True)
    root = work / "root"
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'ovl'}", str(root)])
    cgroups = [r / NAME for r in CGROUP_ROOTS]
    for cg in cgroups:
        cgroup_remove(cg)
        cg.mkdir(exist_ok=True)

    def into_cgroups() -> None:
        for cg in cgroups:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

    if not mounted(NSPAWN_RUN):
        NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "tmpfs", str(NSPAWN_RUN)])
    console = open(work / "console.log", "wb")
    start = time.monotonic()
    proc = subprocess.Popen(["systemd-nspawn", "-q", "-D", str(root), "--boot", "--register=no", "--keep-unit",
                             "-M", NAME, "--private-network", "--console=read-only"], stdin=subprocess.DEVNULL,
                            stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"), preexec_fn=into_cgroups)
    figures = {"answer": "no init", "seconds": None}
    try:
        leader = 0
        while time.monotonic() - start < timeout and proc.poll() is None:
            leader = leader or find_leader(proc.pid)
            answer = state(leader) if leader else "no init yet"
            figures.update(answer=answer, seconds=round(time.monotonic() - start, 1))
            if answer in ("running", "degraded", "maintenance"):
                failed = run(["nsenter", "-t", str(leader), "-a", "systemctl", "--failed", "--no-legend"],
                             check=False, timeout=60)
                figures["failed units"] = failed.stdout.strip() or "none"
                errors = run(["nsenter", "-t", str(leader), "-a", "journalctl", "-b", "-p", "err", "--no-pager",
                              "-o", "cat"], check=False, timeout=60)
                figures["journal errors"] = errors.stdout.strip()[-2500:] or errors.stderr.strip()[-500:]
                break
            time.sleep(1)
        figures["nspawn exit"] = proc.poll()
    finally:
        if leader:
            power_off(proc, leader, figures)
        if proc.poll() is None:
            proc.kill()  # our own child, by its pid
        proc.wait(timeout=30)
        run(["umount", "-R", str(root)], check=False)
        for cg in cgroups:
            cgroup_remove(cg)
        console.close()
    figures["console tail"] = (work / "console.log").read_text(errors="replace")[-1500:]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    lower = unpacked(packages=PACKAGES, variant="minbase", name="systemd-rootfs")
    with tempfile.TemporaryDirectory(prefix="arm64boot-") as tmp:
        figures = boot(lower, Path(tmp), args.timeout)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0 if figures["answer"] in ("running", "degraded") else 1


if __name__ == "__main__":
    sys.exit(main())
