"""Who holds an agent's memory: our daemon vs Flower's own processes, idle and training.

A real fed-coordinator and two real fed-agents (agent venv, tests/model_fleet.py) on
loopback, each fed one client's shared training photos through its inbox (all labeled).
Every process in each agent's tree is put in one role by its command line: the agent daemon
(fed-agent), flower-supernode, flower-superexec, flwr-clientapp (one per message Flower
serves; none while idle). VmRSS is sampled:

- idle: once both agents filed their photos and their trees are up, once a second for
  `--idle-seconds`; a role's figure is its median over the samples and agents;
- training: during one campaign (`fedctl run-now`, `--rounds` x `--epochs`, cold embedding
  cache as on a Pi's first campaign of new photos) every 0.2 s; for each agent the sample
  where its whole tree peaked, each role's RSS in that sample; then the median over agents.

RSS counts shared library pages in every process mapping them, so the roles add up to the
tree's RSS, not to what the host loses (agent_training_memory.py also gives PSS).

    .venv/bin/python benchmarks/agent_memory_share.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from agent_footprint import descendants, rss  # noqa: E402
from conftest import PHOTOS, wait_for  # noqa: E402
from model_fleet import ModelFleet  # noqa: E402
from pseudo_labels import CLIENTS, feed, run_campaign, split_client  # noqa: E402

ROLES = ["agent daemon", "flower-supernode", "flower-superexec", "flwr-clientapp"]
MB = 1024 * 1024


def role_of(pid: int, agent_pid: int) -> str:
    if pid == agent_pid:
        return "agent daemon"
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return next((role for role in ROLES[1:] if role in argv), "other")


def sample(agent_pid: int) -> dict[str, int]:
    """RSS per role of one agent's process tree, now."""
    out = dict.fromkeys([*ROLES, "other"], 0)
    for pid in [agent_pid, *descendants(agent_pid)]:
        try:
            out[role_of(pid, agent_pid)] += rss(pid)
        except OSError:
            continue  # a clientapp that just exited
    return out


def tree_up(agent_pid: int) -> bool:
    now = sample(agent_pid)
    return now["flower-supernode"] > 0 and now["flower-superexec"] > 0


def idle_samples(pids: list[int], seconds: float) -> list[dict[str, int]]:
    samples = []
    for _ in range(int(seconds)):
        samples += [sample(pid) for pid in pids]
        time.sleep(1.0)
    return samples


def training_peaks(fleet: ModelFleet, pids: list[int]) -> tuple[list[dict[str, int]], dict]:
    """Each agent's per-role RSS at its tree's peak during one campaign, and the campaign row."""
    peaks = {pid: dict.fromkeys(ROLES, 0) for pid in pids}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            for pid in pids:
                now = sample(pid)
                if sum(now.values()) > sum(peaks[pid].values()):
                    peaks[pid] = now

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        campaign = run_campaign(fleet)
    finally:
        done.set()
        watcher.join()
    return list(peaks.values()), campaign


def table(phase: str, samples: list[dict[str, int]]) -> list[str]:
    medians = {role: statistics.median(s.get(role, 0) for s in samples) for role in [*ROLES, "other"]}
    tree = statistics.median(sum(s.values()) for s in samples)
    rows = [f"| {phase} | {role} | {medians[role] / MB:.1f} | {100 * medians[role] / tree:.0f}% |"
            for role in [*ROLES, "other"] if role != "other" or medians[role]]
    flower = sum(medians[role] for role in ROLES[1:])
    rows.append(f"| {phase} | Flower's processes together | {flower / MB:.1f} | {100 * flower / tree:.0f}% |")
    rows.append(f"| {phase} | whole tree | {tree / MB:.1f} | 100% |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--idle-seconds", type=float, default=20)
    p.add_argument("--settle", type=float, default=15)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    campaign = {"rounds": args.rounds, "local_epochs": args.epochs, "min_nodes": 2,
                "node_wait_seconds": 120, "round_timeout_seconds": 600, "deadline_seconds": 1800}
    with tempfile.TemporaryDirectory(prefix="mem-share-") as tmp:
        fleet = ModelFleet(Path(tmp), list(CLIENTS), data_dir=PHOTOS, connect_superlink=True,
                           campaign=campaign, agent_settings={"inbox__test_fraction": 0.0}, canary_minutes=0)
        try:
            for agent, client in CLIENTS.items():
                feed(fleet, agent, *split_client(client, 1.0))
            pids = [fleet.agents[name].proc.pid for name in CLIENTS]
            for pid in pids:
                wait_for(lambda: tree_up(pid), 120, what="the agent's SuperNode and SuperExec")
            time.sleep(args.settle)
            idle = idle_samples(pids, args.idle_seconds)
            peaks, row = training_peaks(fleet, pids)
        finally:
            fleet.stop()
    print(f"machine: {platform.machine()}, {len(pids)} agents on one host, Python {platform.python_version()}; "
          f"campaign {row.get('status')} ({args.rounds} rounds x {args.epochs} epochs)")
    print("| phase | process | RSS MB | share of the tree |\n| --- | --- | ---: | ---: |")
    print("\n".join(table("idle", idle) + table("training (tree peak)", peaks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
