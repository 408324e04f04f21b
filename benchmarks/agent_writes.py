"""Bytes an agent writes to its SD card: idle per day, and per campaign (issue 12, item 5).

SD cards wear with writes, so this counts them where a Pi would: a real fed-coordinator and
two real fed-agents on loopback (SuperNodes, inbox, inference, heartbeats every 60 s as in
production), with:

- the kernel's own count for each agent's process tree (`/proc/PID/io` write_bytes: bytes the
  agent, its SuperNode and every reaped `flwr-clientapp` caused to be written to the block
  device; reaped children are added to their parent's count by the kernel);
- the log bytes the agent sent to stdout (what journald stores on a Pi; journald's own
  overhead and compression come on top). The agent's stdout is a pipe here, so these bytes are
  NOT in write_bytes;
- which files under the state dir changed, how often and how big they were after each change
  (a poll every 0.5 s: a file rewritten faster than that is counted once per poll; a file
  appended to, like predictions.jsonl, counts its whole size each time: an upper bound, so
  trust the kernel's total over this breakdown).

    .venv/bin/python benchmarks/agent_writes.py [--idle-minutes 10] [--campaigns 2]
    .venv/bin/python benchmarks/agent_writes.py --camera [--frame-seconds 60] [--camera-minutes 10]

Campaigns are measured one by one (the first also caches the backbone, the trainer and every
embedding; a nightly one after it shows the steady state). The idle window starts once both
agents have filed their photos and run the champion; its figures are scaled to 24 h. With
`--camera` the agents capture (tests/camera_standin.py writing real JPEGs, at production's
interval by default) and classify and pseudo-label every frame: the window is scaled to a
day of `--frames-per-day` frames (capture.daily_cap's default, 1000).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

import model_fleet  # noqa: E402
from conftest import PHOTOS  # noqa: E402
from pseudo_labels import CLIENTS, feed, run_campaign  # noqa: E402

STANDIN = REPO / "tests" / "camera_standin.py"
CAMPAIGN = {"rounds": 6, "local_epochs": 20, "min_nodes": 2, "node_wait_seconds": 120,
            "round_timeout_seconds": 300, "deadline_seconds": 1800}


class LogCounter:
    """The agent's stdout as a FIFO: counts the bytes (journald's input on a Pi) and drops them."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.bytes, self.lines = path, 0, 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        with open(self.path, "rb") as fifo:
            for line in fifo:
                self.bytes += len(line)
                self.lines += 1


class FileWatch:
    """Changes to the files under a folder, by polling (size and mtime) every `every` seconds."""

    def __init__(self, root: Path, every: float = 0.5) -> None:
        self.root, self.every = root, every
        self.changes: Counter = Counter()
        self.bytes: Counter = Counter()
        self.stop_event = threading.Event()
        self.seen = self._scan()
        threading.Thread(target=self._run, daemon=True).start()

    def _scan(self) -> dict[str, tuple[int, int, int]]:
        found = {}
        for path in self.root.rglob("*"):
            try:
                info = path.lstat()
            except OSError:
                continue
            if path.is_file():
                found[str(path.relative_to(self.root))] = (info.st_ino, info.st_mtime_ns, info.st_size)
        return found

    def _run(self) -> None:
        while not self.stop_event.wait(self.every):
            now = self._scan()
            for name, stamp in now.items():
                if self.seen.get(name) != stamp:
                    self.changes[name] += 1
                    self.bytes[name] += stamp[2]
            self.seen = now

    def reset(self) -> None:
        self.changes.clear()
        self.bytes.clear()

    def grouped(self) -> list[tuple[str, int, int]]:
        """(file or pattern, changes, bytes), largest first; per-image files folded by folder."""
        groups: dict[str, list[int]] = {}
        for name, count in self.changes.items():
            key = name
            if name.endswith(".index.json"):
                key = name  # the store's index: rewritten whole, the one to watch
            elif name.startswith(("data/", "cache/")) or "/emb-" in name or name.startswith("models/v"):
                key = os.path.dirname(name).split("/")[0] + "/** (" + Path(name).suffix + ")"
            entry = groups.setdefault(key, [0, 0])
            entry[0] += count
            entry[1] += self.bytes[name]
        return sorted(((k, c, b) for k, (c, b) in groups.items()), key=lambda row: -row[2])


def tree_write_bytes(pid: int) -> int:
    """write_bytes of a process and its live descendants (reaped ones are in their parent's)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = dict(line.split(": ") for line in Path(f"/proc/{current}/io").read_text().splitlines())
            total += int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError, KeyError):
            continue
    return total


class WriteFleet(model_fleet.ModelFleet):
    """ModelFleet whose agents log into a LogCounter FIFO instead of a file."""

    def add_agent(self, name: str) -> None:
        self.logs = getattr(self, "logs", {})
        (self.tmp / name).mkdir()
        self.logs[name] = LogCounter(self.tmp / name / "agent.log")
        super().add_agent(name)


def sample(fleet: WriteFleet) -> dict[str, tuple[int, int]]:
    return {name: (tree_write_bytes(agent.proc.pid), fleet.logs[name].bytes) for name, agent in fleet.agents.items()}


def report(title: str, before: dict, after: dict, watches: dict[str, FileWatch], seconds: float,
           scale: float = 1.0, unit: str = "for the campaign") -> None:
    print(f"\n## {title} ({seconds:.0f} s measured, figures {unit})")
    print("| agent | files (write_bytes) | log lines to journald | total |")
    print("|---|---|---|---|")
    for name in before:
        disk = (after[name][0] - before[name][0]) * scale
        logs = (after[name][1] - before[name][1]) * scale
        print(f"| {name} | {disk / 1e6:.2f} MB | {logs / 1e6:.2f} MB | {(disk + logs) / 1e6:.2f} MB |")
    for name, watch in watches.items():
        rows = watch.grouped()[:8]
        print(f"{name} files changed: " + (", ".join(f"{k} x{c} ({b * scale / 1e6:.2f} MB)" for k, c, b in rows)
                                           or "none"))


def camera_settings(work: Path, frame_seconds: float) -> dict:
    """Capture on, at the production interval, from a stand-in that writes real JPEGs."""
    control = work / "camera-control"
    control.mkdir()
    return {"capture__enabled": True, "capture__interval_seconds": frame_seconds,
            "capture__command": [sys.executable, str(STANDIN), str(PHOTOS / "dataset_server" / "test"),
                                 str(control), "{path}"]}


def measure_campaign(fleet: WriteFleet, watches: dict[str, FileWatch], number: int) -> None:
    for watch in watches.values():
        watch.reset()
    before, started = sample(fleet), time.monotonic()
    run_campaign(fleet)
    champion = fleet.fedctl("models")["champion"]
    for agent in CLIENTS:
        fleet.wait_running(agent, champion, timeout=300)
    report(f"campaign {number} (6 rounds x 20 epochs) and its rollout", before, sample(fleet), watches,
           time.monotonic() - started)


def predictions(work: Path, agent: str) -> int:
    path = work / agent / "state" / "predictions.jsonl"
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def measure_window(fleet: WriteFleet, watches: dict[str, FileWatch], title: str, minutes: float,
                   frames_per_day: int = 0, work: Path | None = None) -> None:
    for watch in watches.values():
        watch.reset()
    seen = {agent: predictions(work, agent) for agent in CLIENTS} if work else {}
    before, started = sample(fleet), time.monotonic()
    time.sleep(minutes * 60)  # the measurement window itself, not a wait for a condition
    seconds = time.monotonic() - started
    if not frames_per_day:
        report(title, before, sample(fleet), watches, seconds, 86400 / seconds, "per day")
        return
    frames = min(predictions(work, agent) - seen[agent] for agent in CLIENTS)
    print(f"\n{frames} frames classified per agent in the window")
    report(title, before, sample(fleet), watches, seconds, frames_per_day / max(frames, 1),
           f"per day of {frames_per_day} frames")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-minutes", type=float, default=10.0)
    parser.add_argument("--campaigns", type=int, default=2)
    parser.add_argument("--camera", action="store_true")
    parser.add_argument("--frame-seconds", type=float, default=60.0)
    parser.add_argument("--camera-minutes", type=float, default=10.0)
    parser.add_argument("--frames-per-day", type=int, default=1000)
    parser.add_argument("--tmpdir", default="/dev/shm",
                        help="TMPDIR of the agents: a tmpfs, as systemd/fed-agent.service gives them "
                             "(/run/fed-agent); '' keeps this machine's")
    parser.add_argument("--index-save-seconds", type=float, default=300.0,
                        help="inbox.index_save_seconds (production's default; the test harness uses 0)")
    args = parser.parse_args()
    disk = tempfile.gettempdir()  # the state dirs stay on this machine's disk, where writes count
    if args.tmpdir:
        os.environ["TMPDIR"] = args.tmpdir  # inherited by the agents, their SuperNodes and ClientApps
    model_fleet.HEARTBEAT_SECONDS = 60  # production's interval: heartbeats are part of idle
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="agent-writes-", dir=disk) as tmp:
        work = Path(tmp)
        settings = camera_settings(work, args.frame_seconds) if args.camera else {}
        settings["inbox__index_save_seconds"] = args.index_save_seconds
        fleet = WriteFleet(work, list(CLIENTS), data_dir=PHOTOS, connect_superlink=True,
                           campaign=dict(CAMPAIGN), canary_minutes=0, agent_settings=settings)
        try:
            for agent, client in CLIENTS.items():
                photos = [(p, p.parent.name) for p in sorted((PHOTOS / client / "train").glob("*/*"))]
                feed(fleet, agent, photos, [])
            watches = {name: FileWatch(work / name / "state") for name in CLIENTS}
            for number in range(1, args.campaigns + 1 if not args.camera else 2):
                measure_campaign(fleet, watches, number)
            if args.camera:
                measure_window(fleet, watches, f"camera, a frame every {args.frame_seconds:.0f} s",
                               args.camera_minutes, frames_per_day=args.frames_per_day, work=work)
            else:
                measure_window(fleet, watches, "idle", args.idle_minutes)
        finally:
            fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
