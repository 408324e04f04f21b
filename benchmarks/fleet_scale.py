"""Benchmark: fleet scale on this machine: N real SuperNodes, the real ClientApp, one campaign each.

For each N (default 2, 5, 10, 20, 30) a SuperLink and N SuperNodes start on loopback
(demo/fed_demo/local_fleet.py, SuperNodes from .venv-agent), each node with about 20 photos
(hard links into ../shared/datasets/dataset_client1+2 under a temp folder, 8 train + 2 test
per label, photos repeat across nodes). Once all N nodes are online, one campaign runs
through the coordinator's CampaignRunner: --rounds rounds (3), --epochs local epochs (the
default), min_nodes = N, early stopping off. The model registration that follows a
campaign (a TensorFlow build, the same for every N) is skipped: the campaign ends when the
runner sees the run finished.

Measured from submit to finished: campaign wall time; per round the wall time (progress.jsonl
round event to round event) and the overhead (wall minus the slowest node's embed+train
seconds); coordinator CPU seconds and peak RSS (SuperLink tree: flower-superlink,
flower-superexec, flwr-serverapp; plus this process, which runs the CampaignRunner and its
`flwr` CLI calls; /proc sampled every 0.5 s, the sampler's own CPU taken off); the SuperLink
database size after the run; per-node RSS (one SuperNode tree: flower-supernode,
flower-superexec, flwr-clientapp; median over time and nodes, and peak). Prints a markdown
table and writes fleet_scale.png and fleet_scale.json to --out.

    .venv/bin/python benchmarks/fleet_scale.py [--nodes 2,5,10,20,30] [--rounds 3] [--out DIR]

--py-spy BIN also records the SuperLink tree and node 1's tree with py-spy (idle frames
included, raw collapsed stacks in --out) to see where the wall time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FED_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fed_common import logs  # noqa: E402
from fed_coordinator.config import CampaignSection  # noqa: E402
from fed_demo.local_fleet import local_fleet  # noqa: E402
from fed_coordinator.campaigns.runner import read_events  # noqa: E402
from fedapp.run_config import RunSettings  # noqa: E402

from fleet_probe import (Sampler, build_node_folders, cpu_delta, keep_logs, kill_groups,  # noqa: E402
                         log_errors, round_phases, round_timing, rss_stats)
from fleet_report import machine, report  # noqa: E402


def code_version() -> str:
    """The commit measured, and whether fedapp/ or coordinator/ differ from it (the ServerApp
    is the fedapp folder as it is when each campaign is submitted)."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--", "fedapp", "coordinator", "demo")
    return git("rev-parse", "--short", "HEAD") + (" (fedapp/coordinator edited)" if dirty else "")


def wait_online(fleet, count: int, timeout: float) -> float:
    """Seconds until the SuperLink lists `count` nodes online."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if sum(1 for n in fleet.runner.cli.supernodes() if n.get("status") == "online") >= count:
            return time.monotonic() - t0
        for node in fleet.nodes:
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited ({node.proc.returncode}); see {node.state_dir}")
        time.sleep(1.0)
    raise TimeoutError(f"{count} nodes not online after {timeout:.0f}s")


def settings_for(n: int, args) -> CampaignSection:
    extra = {"early_stop_patience": 0} if "early_stop_patience" in CampaignSection.model_fields else {}
    if args.round_timeout:
        extra["round_timeout_seconds"] = args.round_timeout
    return CampaignSection(rounds=args.rounds, local_epochs=args.epochs, min_nodes=n,
                           weights=str(args.weights), server_data_dir=SHARED / "datasets" / "dataset_server",
                           deadline_seconds=args.deadline or 240 + 20 * n, **extra)


def instrument(runner, marks: dict) -> None:
    """Time the runner's `flwr ls` polls and skip registration (a TF build the same for
    every N), recording when the runner saw the run finished."""
    status, calls = runner.cli.status, marks.setdefault("status_calls", [])

    def timed_status(run_id):
        t0 = time.time()
        try:
            return status(run_id)
        finally:
            calls.append(time.time() - t0)

    runner.cli.status = timed_status
    runner._register = lambda *a, **k: marks.setdefault("finished", time.time())


def start_py_spy(binary: str, pids: dict[str, int], out: Path, n: int, stack: ExitStack) -> None:
    for name, pid in pids.items():
        proc = subprocess.Popen([binary, "record", "--pid", str(pid), "--subprocesses", "--idle",
                                 "--rate", "20", "--format", "raw", "--nonblocking",
                                 "-o", str(out / f"pyspy-n{n:02d}-{name}.txt")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def stop(p=proc):
            p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
        stack.callback(stop)


def run_one(n: int, nodes: list, args, work: Path, pgids: set[int]) -> dict:
    state = work / f"n{n:02d}"
    state.mkdir(parents=True)
    (state / "exports").symlink_to(work / "exports", target_is_directory=True)  # export once
    load_before = os.getloadavg()
    marks: dict = {}
    with local_fleet(SHARED / "datasets", state, nodes=nodes[:n]) as fleet:
        online_s = wait_online(fleet, n, 120 + 10 * n)
        instrument(fleet.runner, marks)
        roots = {"superlink": fleet.link.proc.pid, "runner": os.getpid(),
                 **{f"node-{i}": node.proc.pid for i, node in enumerate(fleet.nodes, 1)}}
        sampler = Sampler(lambda: roots)
        try:
            with ExitStack() as spies, sampler:
                def on_event(event: dict) -> None:
                    if event["event"] == "submitted":
                        marks["submitted"], marks["cpu_submit"] = time.time(), os.times()
                        if args.py_spy:
                            start_py_spy(args.py_spy, {"superlink": roots["superlink"],
                                                       "node1": roots["node-1"]}, args.out, n, spies)
                outcome = fleet.runner.run(settings_for(n, args), on_event)
                marks.setdefault("finished", time.time())
                marks["cpu_end"] = os.times()
        finally:
            pgids |= sampler.pgids
        db = sum(p.stat().st_size for p in (state / "superlink").glob("superlink.db*"))
        campaign = state / "campaigns" / outcome.campaign_id
        errors = log_errors(state)
        if outcome.status != "completed":
            kept = keep_logs(state, campaign, args.out / f"failed-n{n:02d}")
            return {"nodes": n, "status": outcome.status, "reason": outcome.reason[:300], "errors": errors,
                    "load_before": load_before, "campaign_s": marks["finished"] - marks["submitted"],
                    "logs": str(kept)}
    window = sampler.window(marks["submitted"], marks["finished"] + 0.6)
    events = read_events(campaign / "progress.jsonl", 0)[0]
    return {"status": "completed", "errors": errors,
            **summarise(n, marks, window, events, sampler, db, online_s, load_before, state)}


def summarise(n, marks, window, events, sampler, db, online_s, load_before, state) -> dict:
    rounds = round_timing(events)
    t = {e["event"]: e["time"] for e in events if e["event"] != "round"}
    first_round = min((e["time"] for e in events if e["event"] == "round"), default=None)
    c0, c1 = marks["cpu_submit"], marks["cpu_end"]
    cli_cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
    # the sampler thread's CPU, pro rata of the window in its lifetime, is not the runner's
    lifetime = max(1e-9, sampler.samples[-1].t - sampler.samples[0].t)
    runner_cpu = cpu_delta(window, "runner") - sampler.own_cpu * (window[-1].t - window[0].t) / lifetime
    superlink_cpu = cpu_delta(window, "superlink")
    nodes = [f"node-{i}" for i in range(1, n + 1)]
    coord_rss = [s.rss["superlink"] + s.rss["runner"] for s in window]
    return {
        "nodes": n, "load_before": load_before, "nodes_online_s": online_s, "state_dir": str(state),
        "campaign_s": marks["finished"] - marks["submitted"],
        "phases_s": {"submit_to_started": t.get("started", 0) - marks["submitted"],
                     "started_to_round0": (first_round or 0) - t.get("started", 0),
                     "rounds": sum(r["wall_s"] for r in rounds),
                     "last_round_to_completed": t.get("completed", 0) - max(e["time"] for e in events
                                                                              if e["event"] == "round"),
                     "completed_to_runner_saw_it": marks["finished"] - t.get("completed", 0)},
        "rounds": rounds,
        "round_phases": round_phases(state, events),
        "round_s_median": statistics.median(r["wall_s"] for r in rounds),
        "overhead_s_median": statistics.median(r["overhead_s"] for r in rounds),
        "slowest_node_compute_s_median": statistics.median(r["slowest_node_compute_s"] for r in rounds),
        "coordinator_cpu_s": superlink_cpu + runner_cpu,
        "superlink_tree_cpu_s": superlink_cpu, "runner_cpu_s": runner_cpu, "flwr_cli_cpu_s": cli_cpu,
        "flwr_ls_calls": len(marks["status_calls"]),
        "flwr_ls_median_s": statistics.median(marks["status_calls"]) if marks["status_calls"] else 0,
        "coordinator_peak_rss_mb": max(coord_rss) / 1e6,
        "superlink_tree_peak_rss_mb": max(s.rss["superlink"] for s in window) / 1e6,
        "runner_peak_rss_mb": max(s.rss["runner"] for s in window) / 1e6,
        "superlink_db_mb": db / 1e6,
        "node_rss": rss_stats(window, nodes),
        "node_cpu_s_median": statistics.median(cpu_delta(window, g) for g in nodes),
        # the whole fleet's CPU over the campaign: how much of the machine it wanted
        "fleet_cpu_s": superlink_cpu + runner_cpu + sum(cpu_delta(window, g) for g in nodes),
        "clientapps_peak_concurrent": max(s.clientapps for s in window),
        "samples": len(window),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", default="2,5,10,20,30", help="comma-separated fleet sizes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=RunSettings.model_fields["local_epochs"].default)
    p.add_argument("--weights", default=str(SHARED / "models" / "mobilenet_v2_1.00_160_no_top.weights.h5"))
    p.add_argument("--out", type=Path, default=Path("/tmp/fleet-scale"))
    p.add_argument("--work", type=Path, default=None, help="state folder (default: a temp one, removed)")
    p.add_argument("--py-spy", default=None, help="py-spy binary: profile the SuperLink tree and node 1")
    p.add_argument("--deadline", type=float, default=None,
                   help="campaign deadline, s (default 240 + 20 N; a hung campaign is stopped there)")
    p.add_argument("--round-timeout", type=float, default=None,
                   help="round_timeout_seconds (default: the campaign default); a lost reply costs this")
    p.add_argument("--replot", type=Path, default=None, help="only print the table and plot of this JSON")
    args = p.parse_args(argv)
    if args.replot:
        args.out.mkdir(parents=True, exist_ok=True)
        print(report(json.loads(args.replot.read_text()), args.out))
        return 0
    sizes = [int(v) for v in args.nodes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    logs.configure("warning")
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every context manager stops its processes.
    # SIGINT too: a shell starts background jobs with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    results, pgids = [], set()
    with ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-scale-")))
        (work / "exports").mkdir(parents=True, exist_ok=True)
        pools = [SHARED / "datasets" / f"dataset_client{i}" for i in (1, 2)]
        nodes = build_node_folders(pools, work / "data", max(sizes))
        info = {"machine": machine(), "code": code_version(), "rounds": args.rounds, "epochs": args.epochs,
                "photos_per_node": {"train": 16, "test": 4}, "results": results}
        try:
            for n in sizes:
                print(f"N={n}: running ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.2f})",
                      flush=True)
                results.append(run_one(n, nodes, args, work, pgids))
                r = results[-1]
                (args.out / "fleet_scale.json").write_text(json.dumps(info, indent=2))
                if r["status"] != "completed":
                    print(f"N={n}: {r['status']} after {r['campaign_s']:.0f}s: {r['reason']} "
                          f"(errors {r['errors']}, logs in {r['logs']})", flush=True)
                    continue
                print(f"N={n}: campaign {r['campaign_s']:.1f}s, round {r['round_s_median']:.1f}s, "
                      f"overhead {r['overhead_s_median']:.1f}s, errors {r['errors']}", flush=True)
        finally:
            (args.out / "fleet_scale.json").write_text(json.dumps(info, indent=2))
            leftover = kill_groups(pgids, {os.getpgid(0)})
            if leftover:
                print(f"killed leftover process groups: {leftover}", file=sys.stderr)
    print("\n" + report(info, args.out) + f"\nfigures: {args.out / 'fleet_scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
