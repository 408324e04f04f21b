"""Peak memory and task count of a SuperNode's process tree while it trains (for MemoryMax=).

Runs one campaign through a real SuperLink and two real SuperNodes on loopback, each on a
client's full shared photos (about 200), and samples every SuperNode's process tree (the
SuperNode, `flower-superexec`, each `flwr-clientapp`) every 0.2 s: RSS, PSS and tasks
(threads). The agent daemon itself adds its idle figure (agent_footprint.py) on top.
Prints JSON: peaks per node and the medians over `--runs` campaigns.

    .venv/bin/python benchmarks/agent_training_memory.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from agent_footprint import descendants, pss, rss  # noqa: E402
from fed_coordinator.config import CampaignSection  # noqa: E402
from fed_demo.local_fleet import local_fleet  # noqa: E402

SHARED = REPO.parent / "shared"
MB = 1024 * 1024


def tasks(pid: int) -> int:
    try:
        return len(list(Path(f"/proc/{pid}/task").iterdir()))
    except OSError:
        return 0


def sample_tree(pid: int) -> tuple[int, int, int]:
    pids = [pid, *descendants(pid)]
    totals = [0, 0, 0]
    for p in pids:
        try:
            totals[0] += rss(p)
            totals[1] += pss(p)
            totals[2] += tasks(p)
        except OSError:
            continue  # a clientapp that just exited
    return totals[0], totals[1], totals[2]


def one_campaign(rounds: int, epochs: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        with local_fleet(SHARED / "datasets", Path(tmp) / "state") as fleet:
            peaks = {node.name: [0, 0, 0] for node in fleet.nodes}
            done = threading.Event()

            def watch() -> None:
                while not done.wait(0.2):
                    for node in fleet.nodes:
                        now = sample_tree(node.proc.pid)
                        peaks[node.name] = [max(a, b) for a, b in zip(peaks[node.name], now)]

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            settings = CampaignSection(server_data_dir=SHARED / "datasets" / "dataset_server",
                                       weights=str(SHARED / "models" / "mobilenet_v2_1.00_160_no_top.weights.h5"),
                                       rounds=rounds, local_epochs=epochs)
            outcome = fleet.runner.run(settings)
            done.set()
            watcher.join()
    if outcome.status != "completed":
        raise SystemExit(f"campaign {outcome.status}: {outcome.reason}")
    return [{"node": name, "tree_rss_mb": round(r / MB, 1), "tree_pss_mb": round(p / MB, 1), "tasks": t}
            for name, (r, p, t) in peaks.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    runs = [one_campaign(args.rounds, args.epochs) for _ in range(args.runs)]
    flat = [node for run in runs for node in run]
    print(json.dumps({
        "machine": f"{platform.machine()} {platform.python_version()}, {len(flat) // args.runs} nodes on one host",
        "runs": runs,
        "median_peak_tree_rss_mb": statistics.median(n["tree_rss_mb"] for n in flat),
        "median_peak_tree_pss_mb": statistics.median(n["tree_pss_mb"] for n in flat),
        "max_tasks": max(n["tasks"] for n in flat),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
