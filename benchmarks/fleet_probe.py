"""Helpers of fleet_scale.py: node photo folders, a /proc sampler, progress.jsonl timing.

No psutil in the coordinator venv, so the sampler reads /proc/<pid>/stat directly (Linux
only). A process tree's CPU is the sum, over its live members, of utime + stime + cutime +
cstime: a reaped child's CPU moves into its parent's c-fields, so a flwr-clientapp that
lived between two samples is still counted (as long as its parent lives). RSS is summed over
the live members (shared pages count once per process, like `ps`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LABELS = ("head", "hardhat")


def build_node_folders(pools: list[Path], root: Path, count: int, train_per_label: int = 8,
                       test_per_label: int = 2) -> list[tuple[str, Path]]:
    """`count` node folders (train/<label>/, test/<label>/) of hard links into the shared
    photos, each node a different rotation of the pool (photos repeat across nodes)."""
    nodes = []
    for index in range(count):
        folder = root / f"node-{index + 1:02d}"
        for split, per_label in (("train", train_per_label), ("test", test_per_label)):
            for label in LABELS:
                pool = sorted(p for base in pools for p in (base / split / label).glob("*.jpg"))
                target = folder / split / label
                target.mkdir(parents=True, exist_ok=True)
                for k in range(per_label):
                    src = pool[(index * per_label + k) % len(pool)]
                    dst = target / f"{k:02d}-{src.parent.parent.parent.name}-{src.name}"
                    try:
                        os.link(src, dst)
                    except OSError:  # another filesystem: a copy is as good here
                        shutil.copyfile(src, dst)
        nodes.append((f"pi-{index + 1:02d}", folder))
    return nodes


@dataclass
class Proc:
    pid: int
    ppid: int
    pgid: int
    comm: str
    cpu: float  # seconds, utime + stime + cutime + cstime
    own_cpu: float  # seconds, utime + stime
    rss: int  # bytes
    start: int  # clock ticks after boot: with pid, names a process uniquely


def read_procs() -> dict[int, Proc]:
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:  # it exited between listdir and open
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        ticks = [int(v) for v in rest[11:15]]
        procs[int(entry)] = Proc(int(entry), int(rest[1]), int(rest[2]), comm,
                                 sum(ticks) / CLK_TCK, sum(ticks[:2]) / CLK_TCK, int(rest[21]) * PAGE,
                                 int(rest[19]))
    return procs


def tree(procs: dict[int, Proc], root: int) -> list[Proc]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(procs[pid])
            todo.extend(children.get(pid, []))
    return out


@dataclass
class Sample:
    t: float
    cpu: dict[str, float]
    rss: dict[str, int]
    clientapps: int


@dataclass
class Sampler:
    """Samples CPU and RSS of named process trees every `interval` s in a thread.

    `roots()` gives {group name: root pid}; the group "runner" is this process alone (its
    c-fields hold the `flwr` CLI calls it reaped). The sampler's own thread CPU is kept
    apart (`own_cpu`) so it can be taken off the runner's."""

    roots: Callable[[], dict[str, int]]
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    pgids: set[int] = field(default_factory=set)
    own_cpu: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> Sample:
        procs = read_procs()
        cpu, rss, clientapps = {}, {}, 0
        for name, root in self.roots().items():
            members = [procs[root]] if name == "runner" and root in procs else tree(procs, root)
            cpu[name] = sum(p.cpu for p in members)
            rss[name] = sum(p.rss for p in members)
            if name != "runner":
                self.pgids.update(p.pgid for p in members)
            clientapps += sum(1 for p in members if p.comm.startswith("flwr-clientapp"))
        return Sample(time.time(), cpu, rss, clientapps)

    def _loop(self) -> None:
        start = time.thread_time()
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self.own_cpu = time.thread_time() - start
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fleet-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        self.samples.append(self.sample())

    def window(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.t <= t1]


def cpu_delta(samples: list[Sample], group: str) -> float:
    """CPU seconds a group used between the first and last sample that saw it."""
    seen = [s.cpu[group] for s in samples if group in s.cpu]
    return max(seen) - seen[0] if seen else 0.0


def rss_stats(samples: list[Sample], groups: list[str]) -> dict[str, float]:
    """Median and peak RSS (MB) over time of each group, then median/max across the groups."""
    medians, peaks = [], []
    for group in groups:
        values = [s.rss[group] for s in samples if s.rss.get(group)]
        if values:
            medians.append(statistics.median(values) / 1e6)
            peaks.append(max(values) / 1e6)
    return {"median_mb": statistics.median(medians) if medians else 0.0,
            "peak_mb": max(peaks) if peaks else 0.0}


def round_timing(events: list[dict]) -> list[dict]:
    """Per training round: wall time (round event to round event; round 1 from the round-0
    evaluation), the slowest participant's embed+train seconds, and the rest (overhead)."""
    rounds = sorted((e for e in events if e["event"] == "round"), key=lambda e: e["round"])
    out = []
    for before, this in zip(rounds, rounds[1:]):
        parts = this.get("participants", [])
        slowest = max(((p.get("embed-seconds") or 0) + (p.get("train-seconds") or 0) for p in parts),
                      default=0.0)
        wall = this["time"] - before["time"]
        out.append({"round": this["round"], "wall_s": wall, "slowest_node_compute_s": slowest,
                    "overhead_s": wall - slowest, "participants": len(parts),
                    "failed": this.get("failed", 0), "timed_out": this.get("timed_out", 0)})
    return out


def kill_groups(pgids: set[int], keep: set[int], grace: float = 15.0) -> list[int]:
    """SIGKILL what is left, after `grace` s, of the process groups the sampler saw in our
    trees (every SuperLink and SuperNode has its own session; the SuperLink's
    flower-superexec another one, and it exits by itself within a second or so of its
    parent). Only processes started after this one count, so a recycled group id of
    someone else's is never touched; `keep` is our own group."""
    me = read_procs()[os.getpid()].start

    def left() -> set[int]:
        return {p.pgid for p in read_procs().values() if p.pgid in pgids - keep and p.start >= me}

    deadline = time.monotonic() + grace
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    killed = []
    for pgid in sorted(left()):
        try:
            os.killpg(pgid, 9)
            killed.append(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def log_errors(state: Path) -> dict[str, int]:
    """Failures the campaign's logs show: the SuperLink's SQLite lock errors and 500s, and
    SuperNode replies that never reached it (Flower's SuperNode does not retry those)."""
    link = (state / "superlink" / "superlink.log").read_text(errors="replace")
    nodes = [p.read_text(errors="replace") for p in sorted(state.glob("agent-*/supernode.log"))]
    return {"superlink_db_locked": link.count("database is locked"),
            "superlink_http_500": link.count('HTTP/1.1" 500'),
            "node_failed_sends": sum(text.count("Failed to send message") for text in nodes)}


def keep_logs(state: Path, campaign: Path, target: Path) -> Path:
    """Copy a failed campaign's logs out of the temp state folder."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(state / "superlink" / "superlink.log", target)
    for log in state.glob("agent-*/supernode.log"):
        shutil.copy(log, target / f"{log.parent.name}.log")
    if (campaign / "progress.jsonl").is_file():
        shutil.copy(campaign / "progress.jsonl", target)
    return target


def _stamp(line: str) -> float | None:
    import json
    from datetime import datetime

    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
        return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError):
        return None


def clientapp_spans(log: Path) -> dict[int, dict[str, float]]:
    """Per round, when the node's train clientapp logged `trained` and when it handed its
    reply to the SuperNode (push-task-output), from supernode.log (the clientapp's own log
    lines carry timestamps; the SuperNode's lines do not)."""
    import json

    spans: dict[int, dict[str, float]] = {}
    block: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if "Start `flwr-clientapp` process" in line:
            block = {}
            continue
        t = _stamp(line)
        if t is None:
            continue
        if '"event": "trained"' in line:
            block["trained"] = t
            spans[json.loads(line)["round"]] = block
        elif "push-task-output" in line and "trained" in block:
            block["pushed"] = t
    return spans


def round_phases(state: Path, events: list[dict]) -> list[dict]:
    """Split each round's wall time with the nodes' clientapp timestamps: the round's start
    (the previous round event: the ServerApp sends the train messages right after it) to
    `trained` (SuperNode pull wait + superexec poll + clientapp start-up + embed/train),
    `trained` to the reply handed to the SuperNode, and the last handed-over reply to the
    round event (SuperNode push to the SuperLink, ServerApp poll, aggregate, evaluate).
    Median over nodes, and the slowest node."""
    rounds = sorted((e for e in events if e["event"] == "round"), key=lambda e: e["round"])
    spans = [clientapp_spans(log) for log in sorted(state.glob("agent-*/supernode.log"))]
    out = []
    for before, this in zip(rounds, rounds[1:]):
        t0, r = before["time"], this["round"]
        nodes = [s[r] for s in spans if r in s and "pushed" in s[r]]
        if not nodes:
            continue
        trained = [n["trained"] - t0 for n in nodes]
        hand = [n["pushed"] - n["trained"] for n in nodes]
        out.append({"round": r, "nodes": len(nodes),
                    "start_to_trained_s": {"median": statistics.median(trained), "max": max(trained)},
                    "reply_handover_s": {"median": statistics.median(hand), "max": max(hand)},
                    "last_reply_to_round_end_s": this["time"] - max(n["pushed"] for n in nodes)})
    return out
