"""Benchmark: this design vs the seed recipe end to end, through real Flower on loopback.

One SuperLink and 2 SuperNodes (demo/fed_demo/local_fleet.py) on the shared photos
(dataset_client1/2, server test set dataset_server/test), the seed's shape: 6 rounds x 20
local epochs, batch 8. Both apps go through the same SuperLink and the same SuperNodes, which
run from the coordinator venv (the seed ClientApp needs TensorFlow), so it is literally the
same deployment for both:

1. this design: CampaignRunner.run(CampaignSection(...)) as `make demo` runs a campaign
   (TFLite exports, fedapp: embeddings once, the TFLite head trainer, head weights only);
   early stopping off (patience 0) for the like-for-like shape; `--defaults` adds a run with
   the campaign defaults (early stopping on) on the same, now warm, fleet.
2. the seed recipe: benchmarks/seed_app (Keras fit of the whole model through the frozen
   backbone every epoch, Adam, FedAvg over all weights), submitted with the same FlwrCli.

Per run: wall time from submit (`flwr run` called) to the SuperLink saying finished, bytes
exchanged (weights both ways, all rounds, all clients, counted on the messages; for this
design also the TFLite artifacts shipped once, and the SuperLink's own per-run traffic
counter), server accuracy after the last round. Then the ratios seed/design. Each repeat
starts a fresh fleet (cold caches); medians over `--repeats`.

    .venv/bin/python benchmarks/end_to_end.py --repeats 2
    .venv/bin/python benchmarks/end_to_end.py --warm     # + this design again with warm caches

`--warm` runs this design's campaign a second time on the same fleet: every embedding is then
cached, as on a Pi whose agent embedded its photos at ingest (the nightly case), while the
first run is a Pi's first campaign ever (round 1 embeds every photo).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SHARED = Path(os.environ.get("FED_SHARED", REPO.parent / "shared"))
# Before fed_demo is imported: its SuperNodes run from this bin folder (TensorFlow there).
os.environ["FED_AGENT_BIN"] = str(REPO / ".venv" / "bin")
# The seed app imports the shared recipe; the fleet's processes inherit this environment.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The seed's Keras gets its fastest TensorFlow (as in campaign_compute.py); this design's
# ClientApp runs TFLite, which this does not touch.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from fed_common import logs  # noqa: E402
from fed_coordinator.config import CampaignSection  # noqa: E402
from fed_coordinator.flower import FlwrCli, FlwrError  # noqa: E402
from fed_demo.local_fleet import local_fleet  # noqa: E402

SEED_APP = BENCH / "seed_app"
WEIGHTS = SHARED / "models" / "mobilenet_v2_1.00_160_no_top.weights.h5"


class TimedCli(FlwrCli):
    """FlwrCli that notes when each run was submitted and first seen finished."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.submitted: dict[int, float] = {}
        self.finished: dict[int, tuple[float, dict]] = {}

    def run(self, app_dir: Path, run_config: dict) -> int:
        started = time.monotonic()
        run_id = super().run(app_dir, run_config)
        self.submitted[run_id] = started
        return run_id

    def status(self, run_id: int) -> dict:
        info = super().status(run_id)
        if info.get("status", "").startswith("finished") and run_id not in self.finished:
            self.finished[run_id] = (time.monotonic(), info)
        return info

    def timing(self, run_id: int) -> dict:
        end, info = self.finished[run_id]
        return {"wall_s": round(end - self.submitted[run_id], 1),
                "superlink_pending_to_finished_s": _seconds_between(info.get("pending-at"), info.get("finished-at")),
                "flower_elapsed_s": info.get("elapsed"),
                "superlink_traffic_bytes": info.get("network-traffic", {}).get("total-bytes"),
                "flower_compute_s": info.get("compute-time", {})}


def _seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds between two of `flwr ls`'s timestamps (the SuperLink's clock, to the second:
    `wall_s` also counts `flwr run` itself and the poll that saw the end, every few seconds)."""
    from datetime import datetime

    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None


def design_run(fleet, cli: TimedCli, args, early_stop_off: bool) -> dict:
    settings = {"server_data_dir": SHARED / "datasets" / "dataset_server", "weights": str(WEIGHTS),
                "rounds": args.rounds, "local_epochs": args.epochs, "batch_size": args.batch}
    if early_stop_off:
        if "early_stop_patience" not in CampaignSection.model_fields:
            print("note: CampaignSection has no early_stop_patience (no early stopping)", file=sys.stderr)
        else:
            settings["early_stop_patience"] = 0
    events: list[dict] = []
    t0 = time.monotonic()
    outcome = fleet.runner.run(CampaignSection(**settings), events.append)
    total = time.monotonic() - t0
    if outcome.status != "completed":
        raise SystemExit(f"design campaign {outcome.status}: {outcome.reason}")
    rounds = [r for r in outcome.rounds if r["round"] > 0]
    weights = sum(r["sent_to"] * r["bytes_down_per_agent"] + sum(p["bytes_up"] for p in r["participants"])
                  for r in rounds)
    # TFLite artifacts go to a node once (where its cache lacks them): fedapp reports them in
    # the started event, or per round where it ships them when a node first trains.
    shipped = [e.get("artifacts", {}).get("shipped_bytes", {}) for e in events if e["event"] == "started"]
    shipped += [r.get("shipped_bytes", {}) for r in rounds]
    artifacts = sum(sum(per_node.values()) for per_node in shipped)
    participants = [p for r in rounds for p in r["participants"]]
    return {**cli.timing(outcome.run_id), "runner_total_s": round(total, 1), "rounds_run": len(rounds),
            "weight_bytes": weights, "artifact_bytes": artifacts, "bytes": weights + artifacts,
            "server_accuracy": rounds[-1]["server_accuracy"],
            "client_embed_s": round(sum(p.get("embed-seconds") or 0 for p in participants), 1),
            "client_train_s": round(sum(p.get("train-seconds") or 0 for p in participants), 1)}


def seed_run(cli: TimedCli, out: Path, args) -> dict:
    out.mkdir(parents=True)
    config = {"num-server-rounds": args.rounds, "local-epochs": args.epochs, "batch-size": args.batch,
              "seed": args.seed, "min-nodes": 2, "weights": str(WEIGHTS),
              "server-test-dir": str(SHARED / "datasets" / "dataset_server" / "test"),
              "output-dir": str(out)}
    run_id = cli.run(SEED_APP, config)
    deadline = time.monotonic() + args.seed_deadline
    while run_id not in cli.finished:
        if time.monotonic() > deadline:
            cli.stop(run_id)
            raise SystemExit(f"seed run {run_id} not finished after {args.seed_deadline:.0f}s")
        time.sleep(1.0)
        try:
            cli.status(run_id)
        except FlwrError as exc:
            print(f"flwr ls: {exc}", file=sys.stderr)
    lines = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    evaluated = [line for line in lines if "round" in line]
    rounds = evaluated[1:]
    # seconds per round (round 0 is the initial model's evaluation): what a failed run still tells
    round_s = [round(b["time"] - a["time"], 1) for a, b in zip(evaluated, evaluated[1:])]
    info = cli.finished[run_id][1]
    if not info["status"].endswith("completed") or len(rounds) != args.rounds:
        # Flower's SuperLink can fail a run under load (see README.md); keep what it measured
        print(f"seed run {info['status']} ({info.get('status-details')}), {len(rounds)} rounds "
              f"evaluated, seconds per round {round_s}, last {rounds[-1] if rounds else None}",
              file=sys.stderr)
        raise SystemExit(f"seed run did not complete; see {out}")
    weights = sum(r["bytes_down"] + r["bytes_up"] for r in rounds)
    return {**cli.timing(run_id), "rounds_run": len(rounds), "round_s": round_s, "weight_bytes": weights,
            "bytes": weights, "server_accuracy": rounds[-1]["server_accuracy"]}


def one_repeat(args, index: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="e2e-")  # kept when a run fails: its logs say why
    try:
        result = _repeat_in(Path(tmp), args, index)
    except BaseException:
        print(f"repeat {index} failed; its state and logs stay in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _repeat_in(tmp: Path, args, index: int) -> dict:
    state = tmp / "state"
    with local_fleet(SHARED / "datasets", state) as fleet:
        cli = TimedCli(state / "flwr-cli-timed", fleet.link.address)
        fleet.runner.cli = cli  # the runner submits and polls through the timed CLI
        result = {"design": design_run(fleet, cli, args, early_stop_off=True)}
        print(f"repeat {index}: design {json.dumps(result['design'])}", flush=True)
        if args.warm:  # the nightly case: every embedding already cached (the agent embeds at ingest)
            result["design_warm"] = design_run(fleet, cli, args, early_stop_off=True)
            print(f"repeat {index}: design warm {json.dumps(result['design_warm'])}", flush=True)
        if args.defaults:
            result["design_defaults_warm"] = design_run(fleet, cli, args, early_stop_off=False)
            print(f"repeat {index}: design defaults {json.dumps(result['design_defaults_warm'])}",
                  flush=True)
        if not args.skip_seed:
            result["seed"] = seed_run(cli, tmp / "seed-out", args)
            print(f"repeat {index}: seed {json.dumps(result['seed'])}", flush=True)
    return result


def median_of(runs: list[dict], key: str) -> dict:
    present = [r[key] for r in runs if key in r]
    if not present:
        return {}
    return {k: statistics.median(p[k] for p in present) for k, v in present[0].items()
            if isinstance(v, (int, float))}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _superlink_in_memory() -> None:
    """Both apps' runs then go through a SuperLink that keeps its state in memory (Flower's
    `:flwr-in-memory:`); production keeps --database (node ids survive a restart)."""
    from fed_coordinator.flower import SuperLink

    with_file = SuperLink.command

    def command(self) -> list[str]:
        cmd = with_file(self)
        cmd[cmd.index("--database") + 1] = ":flwr-in-memory:"
        return cmd

    SuperLink.command = command


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--defaults", action="store_true", help="also a design run with the campaign defaults")
    p.add_argument("--warm", action="store_true", help="also the same design run again on the warm fleet "
                   "(embeddings cached, as the agent's embeddings at ingest leave them)")
    p.add_argument("--skip-seed", action="store_true")
    p.add_argument("--seed-deadline", type=float, default=3600)
    p.add_argument("--in-memory-superlink", action="store_true",
                   help="SuperLink state in memory, not in its SQLite file: the seed's 9.7 MB replies made "
                        "the file-backed SuperLink answer 'database is locked' and fail the run, 4 times of 4")
    args = p.parse_args()
    if args.in_memory_superlink:
        _superlink_in_memory()
    logs.configure("warning")
    runs = [one_repeat(args, i) for i in range(1, args.repeats + 1)]
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}, "
                         f"Python {platform.python_version()}",
              "shape": vars(args), "runs": runs,
              "median": {key: median_of(runs, key) for key in ("design", "design_warm", "seed", "design_defaults_warm")}}
    design, seed = report["median"]["design"], report["median"]["seed"]
    if seed:
        report["ratios_seed_over_design"] = {
            "wall_time": round(seed["wall_s"] / design["wall_s"], 2),
            "bytes_incl_artifacts": round(seed["bytes"] / design["bytes"], 1),
            "weight_bytes": round(seed["weight_bytes"] / design["weight_bytes"], 1),
            "accuracy_points_design_minus_seed": round(100 * (design["server_accuracy"] - seed["server_accuracy"]), 1),
        }
        if report["median"]["design_warm"]:
            report["ratios_seed_over_design"]["wall_time_warm"] = round(
                seed["wall_s"] / report["median"]["design_warm"]["wall_s"], 2)
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
