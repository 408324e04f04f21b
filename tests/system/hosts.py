"""Real systemd hosts for system tests: systemd-nspawn --boot containers on a private bridge.

Why nspawn (see /work/shared/notes/system-test-harness.md): this VM's PID 1 is not systemd
and KVM guests hang, but `systemd-nspawn --boot` gives each host a real systemd 252, journald
and sshd in about a second. Each host is an overlay on one shared read-only rootfs, has its
own cgroup (v1 name=systemd + unified), a static address on a bridge with no forwarding or
NAT (so it has no outbound network), and is stopped by its leader PID, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .nspawn import (CGROUP_ROOTS, NSPAWN_RUN, bridge_up, cgroup_remove, deadline_wait, exclusive,
                     find_leader, mounted, run, stop_leader, unmount)
from .rootfs import BUILD, ssh_key, unpacked

HOSTS_DIR = BUILD / "hosts"
DEFAULT_SPECS = (("coord", 10), ("pi1", 11), ("pi2", 12))


@dataclass
class Host:
    """One booted host: `ssh`, `run_in` (nsenter) and `journal` helpers."""

    name: str
    ip: str
    root: Path  # the merged overlay: the host's / seen from outside
    dir: Path
    proc: subprocess.Popen | None = None
    leader: int = 0  # the container's PID 1, in our PID namespace
    key: Path = field(default_factory=ssh_key)

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o",
                "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR", f"root@{self.ip}"]

    def ssh(self, cmd: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        proc = run(self.ssh_argv() + [cmd], check=False, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}$ {cmd}\nexit {proc.returncode}\n{proc.stdout[-2000:]}"
                                 f"\n{proc.stderr[-2000:]}")
        return proc

    def run_in(self, cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `cmd` inside the host from outside, without SSH (nsenter -t LEADER -a)."""
        proc = run(["nsenter", "-t", str(self.leader), "-a", "sh", "-c", cmd], check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}# {cmd}\nexit {proc.returncode}\n{proc.stderr[-2000:]}")
        return proc

    def journal(self, unit: str | None = None, output: str = "cat") -> str:
        """The host's persistent journal (read from outside; works after it stopped too)."""
        cmd = ["journalctl", "-D", str(self.root / "var/log/journal"), "--no-pager", "-o", output]
        proc = run(cmd + (["-u", unit] if unit else []), check=False)
        if proc.returncode != 0 and self.upper_journal().is_dir():  # overlay already unmounted
            proc = run(["journalctl", "-D", str(self.upper_journal()), "--no-pager", "-o", output]
                        + (["-u", unit] if unit else []), check=False)
        return proc.stdout

    def upper_journal(self) -> Path:
        return self.dir / "upper/var/log/journal"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _reap_stale(hosts: list[Host]) -> None:
    """Hosts left by a killed run with the same names: stop them by their leader PIDs."""
    for h in hosts:
        leader_file = h.dir / "leader.pid"
        if leader_file.is_file():
            with contextlib.suppress(ValueError):
                stop_leader(int(leader_file.read_text()), h.name, 10)
            leader_file.unlink()
        unmount(h.root)


def _prepare(host: Host, lower: Path, all_hosts: list[tuple[str, str]], fresh: bool) -> None:
    """Overlay for `host` (fresh, or the last run's upper layer) with its address and names."""
    if fresh:
        shutil.rmtree(host.dir, ignore_errors=True)
    shutil.rmtree(host.dir / "work", ignore_errors=True)
    for sub in ("upper", "work", "merged"):
        (host.dir / sub).mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={lower},upperdir={host.dir / 'upper'},workdir={host.dir / 'work'}", str(host.root)])
    net = host.root / "etc/systemd/network/10-host0.network"
    net.write_text(f"[Match]\nName=host0\n\n[Network]\nAddress={host.ip}/24\nLinkLocalAddressing=no\n"
                   "IPv6AcceptRA=no\n")  # no Gateway=: nothing outside the bridge is reachable
    (host.root / "etc/hostname").write_text(host.name + "\n")
    hosts = "127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in all_hosts)
    (host.root / "etc/hosts").write_text(hosts)


def _boot(host: Host, bridge: str, binds: list[tuple[str, str, bool]]) -> None:
    cgroups = [root / host.name for root in CGROUP_ROOTS]
    for cg in cgroups:
        cgroup_remove(cg)
        cg.mkdir(exist_ok=True)

    def into_cgroups() -> None:  # runs in the child before exec: its own cgroups
        for cg in cgroups:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

    argv = ["systemd-nspawn", "-q", "-D", str(host.root), "--boot", "--register=no", "--keep-unit",
            "-M", host.name, f"--network-bridge={bridge}", "--console=read-only"]
    argv += [f"--bind{'-ro' if ro else ''}={src}:{dst}" for src, dst, ro in binds]
    console = open(host.dir / "console.log", "wb")
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    host.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True, preexec_fn=into_cgroups)
    console.close()
    host.leader = deadline_wait(lambda: find_leader(host.proc.pid) or (host.proc.poll() is not None and -1),
                                 30, f"{host.name}'s init")
    if host.leader < 0:
        raise RuntimeError(f"{host.name}: systemd-nspawn exited {host.proc.returncode}:\n"
                           + (host.dir / "console.log").read_text(errors="replace")[-3000:])
    (host.dir / "leader.pid").write_text(str(host.leader))


def _sshd_ready(host: Host) -> bool:
    if not host.alive():
        raise RuntimeError(f"{host.name}: systemd-nspawn exited {host.proc.returncode}:\n"
                           + (host.dir / "console.log").read_text(errors="replace")[-3000:])
    with contextlib.suppress(OSError, subprocess.TimeoutExpired), \
            socket.create_connection((host.ip, 22), timeout=1) as s:
        if not s.recv(64).startswith(b"SSH-"):
            return False
        return host.ssh("true", check=False, timeout=15).returncode == 0
    return False


def _teardown(hosts: list[Host], bridge: str, made_bridge: bool) -> None:
    for h in hosts:  # signal all first so they power off in parallel
        if h.leader > 1 and h.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.leader, signal.SIGRTMIN + 4)
    for h in hosts:
        if h.leader > 1:
            stop_leader(h.leader, h.name, 15)
        if h.proc is not None:
            try:
                h.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                h.proc.kill()  # our own child, by its pid
                h.proc.wait(timeout=10)
        unmount(h.root)
        (h.dir / "leader.pid").unlink(missing_ok=True)
        for root in CGROUP_ROOTS:
            cgroup_remove(root / h.name)
    if made_bridge:
        run(["ip", "link", "del", bridge], check=False)


@contextlib.contextmanager
def booted_hosts(specs=DEFAULT_SPECS, bridge: str = "fedbr0", subnet: str = "10.77.0",
                 binds: list[tuple[str, str, bool]] = (), boot_timeout: float = 90, fresh: bool = True,
                 log=print):
    """Boot one host per (name, last octet) in `specs`; yield {name: Host}; always tear down.

    fresh=False boots the previous run's hosts again with their state (for debugging a
    failure by hand, e.g. `python -m tests.system.hosts` style scripts).

    The upper layers (with each host's journal) stay under build/system/hosts/NAME/ after
    teardown for post-mortems; the next run clears them.
    """
    lower = unpacked(log)
    hosts = [Host(name, f"{subnet}.{octet}", HOSTS_DIR / name / "merged", HOSTS_DIR / name)
             for name, octet in specs]
    previous = signal.getsignal(signal.SIGTERM)
    made_bridge, prepared = False, []

    def on_term(signum, frame):  # a CI timeout's SIGTERM still runs the teardown below
        raise KeyboardInterrupt(f"signal {signum}")

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive(HOSTS_DIR, [bridge] + [h.name for h in hosts]))
        _reap_stale(hosts)
        with contextlib.suppress(ValueError):  # not in the main thread: no handler
            signal.signal(signal.SIGTERM, on_term)
        if not mounted(NSPAWN_RUN):  # see the notes: nspawn's propagate dirs need it
            NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
            run(["mount", "-t", "tmpfs", "tmpfs", str(NSPAWN_RUN)])
        bridge_up(bridge, subnet)
        made_bridge = True
        start = time.monotonic()
        for h in hosts:
            prepared.append(h)  # from here on, its overlay and cgroups are ours to remove
            _prepare(h, lower, [(x.name, x.ip) for x in hosts], fresh)
            _boot(h, bridge, list(binds))
        for h in hosts:
            deadline_wait(lambda: _sshd_ready(h), boot_timeout, f"sshd on {h.name} ({h.ip})", 0.3)
        log(f"hosts: {', '.join(h.name for h in hosts)} booted, sshd up in {time.monotonic() - start:.1f}s")
        yield {h.name: h for h in hosts}
    finally:
        start = time.monotonic()
        _teardown(prepared, bridge, made_bridge)
        log(f"hosts: torn down in {time.monotonic() - start:.1f}s")
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        stack.close()


def dump_journals(hosts: dict[str, Host], out: Path) -> None:
    """Write each host's whole journal to OUT/NAME.journal.txt (for a failed test's artifacts)."""
    out.mkdir(parents=True, exist_ok=True)
    for h in hosts.values():
        (out / f"{h.name}.journal.txt").write_text(h.journal(output="short-precise"))

