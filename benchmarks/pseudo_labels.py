"""Learning quality with pseudo labels, end to end through the real daemons (issue 11).

In one run, on loopback, a real fed-coordinator (SuperLink, campaigns, champion gate, staged
rollout) and two real fed-agents (SuperNodes, inbox, inference, pseudo-labeler):

1. each client keeps `--labeled` (15%) of its photos labeled (the first by SHA-256 per label:
   a fixed, unbiased choice); the rest go to `inbox/unlabeled/`;
2. campaign 1 trains on the human labels only; its champion rolls out to both Pis, which
   classify their unlabeled photos: pseudo labels (confidence >= `--threshold`, at most
   `--max-pseudo-ratio` x the class's human labels) or review items;
3. campaign 2 runs with `campaign.use_pseudo_labels`;
4. the reference: the same campaign on a fleet with every photo labeled.

It prints the server accuracy of the three (the champion gate's own score, on its part of
the server folder), pseudo-label precision against the true labels (the benchmark knows
them: the photo's folder), how many images went to review, and whether the champion gate
ever made champion a model scoring below the one it replaced.

    .venv/bin/python benchmarks/pseudo_labels.py [--labeled 0.15] [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import PHOTOS, wait_for  # noqa: E402
from fed_common.store import ImageStore  # noqa: E402
from model_fleet import ModelFleet  # noqa: E402

CAMPAIGN = {"rounds": 6, "local_epochs": 20, "min_nodes": 2, "node_wait_seconds": 120,
            "round_timeout_seconds": 300, "deadline_seconds": 1800}
CLIENTS = {"pi-1": "dataset_client1", "pi-2": "dataset_client2"}


def split_client(client: str, labeled_share: float) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(labeled, unlabeled) photos of a client, each with its true label."""
    labeled, unlabeled = [], []
    for label_dir in sorted((PHOTOS / client / "train").iterdir()):
        photos = sorted(label_dir.iterdir(), key=lambda p: hashlib.sha256(p.read_bytes()).hexdigest())
        keep = max(3, round(labeled_share * len(photos)))
        labeled += [(p, label_dir.name) for p in photos[:keep]]
        unlabeled += [(p, label_dir.name) for p in photos[keep:]]
    return labeled, unlabeled


def feed(fleet: ModelFleet, agent: str, labeled, unlabeled) -> None:
    inbox = fleet.tmp / agent / "state" / "inbox"
    wait_for(inbox.is_dir, 60, what=f"{agent}'s inbox")
    for photo, label in labeled:
        (inbox / label).mkdir(exist_ok=True)
        shutil.copy(photo, inbox / label / photo.name)
    (inbox / "unlabeled").mkdir(exist_ok=True)
    for photo, label in unlabeled:
        shutil.copy(photo, inbox / "unlabeled" / f"{photo.parent.name}-{photo.name}")
    wait_for(lambda: not any(path.is_file() for path in inbox.rglob("*")), 300, what=f"{agent}'s inbox filed")


def run_campaign(fleet: ModelFleet) -> dict:
    before = {row["id"] for row in fleet.fedctl("campaigns")["campaigns"]}
    fleet.fedctl("run-now")
    return wait_for(lambda: next((row for row in fleet.fedctl("campaigns")["campaigns"]
                                  if row["id"] not in before and row["status"] != "running"), None),
                    3600, interval=5, what="the campaign to finish")


def model_score(fleet: ModelFleet, version: int | None) -> float | None:
    rows = {row["version"]: row for row in fleet.fedctl("models")["models"]}
    return rows[version]["score"] if version in rows else None


def index_of(fleet: ModelFleet, agent: str):
    return ImageStore(fleet.tmp / agent / "state" / "data").read_index().images


def wait_classified(fleet: ModelFleet) -> None:
    for agent in CLIENTS:
        wait_for(lambda: not [e for e in index_of(fleet, agent) if e.status == "unlabeled"], 600, interval=2,
                 what=f"{agent}'s unlabeled photos classified")


def pseudo_quality(fleet: ModelFleet, truth: dict[str, str]) -> tuple[int, int, int]:
    """(pseudo labels, of which right, review items) over both agents."""
    pseudo = right = review = 0
    for agent in CLIENTS:
        for entry in index_of(fleet, agent):
            if entry.status == "pseudo":
                pseudo += 1
                right += entry.prediction.label == truth[entry.sha256]
            review += entry.status == "review"
    return pseudo, right, review


def semi_supervised(work: Path, args) -> dict:
    agent_settings = {"labeling__pseudo_threshold": args.threshold, "labeling__max_pseudo_ratio": args.max_pseudo_ratio,
                      "inbox__test_fraction": 0.0}
    work.mkdir(parents=True)
    fleet = ModelFleet(work, list(CLIENTS), data_dir=PHOTOS, connect_superlink=True, campaign=dict(CAMPAIGN),
                       agent_settings=agent_settings, canary_minutes=0)
    try:
        truth = {}
        for agent, client in CLIENTS.items():
            labeled, unlabeled = split_client(client, args.labeled)
            truth.update({hashlib.sha256(p.read_bytes()).hexdigest(): label for p, label in unlabeled})
            feed(fleet, agent, labeled, unlabeled)
        first = run_campaign(fleet)
        champion = fleet.fedctl("models")["champion"]
        for agent in CLIENTS:
            fleet.wait_running(agent, champion, timeout=120)
        wait_classified(fleet)
        pseudo, right, review = pseudo_quality(fleet, truth)
        fleet.campaign["use_pseudo_labels"] = True
        fleet.restart_coordinator(fleet.private)
        second = run_campaign(fleet)
        models = fleet.fedctl("models")["models"]
        return {"first": first, "second": second, "v1": model_score(fleet, first["model_version"]),
                "v2": model_score(fleet, second["model_version"]), "pseudo": pseudo, "right": right,
                "review": review, "unlabeled": len(truth), "models": models}
    finally:
        fleet.stop()


def fully_labeled(work: Path) -> float | None:
    work.mkdir(parents=True)
    fleet = ModelFleet(work, list(CLIENTS), data_dir=PHOTOS, connect_superlink=True, campaign=dict(CAMPAIGN),
                       agent_settings={"inbox__test_fraction": 0.0}, canary_minutes=0)
    try:
        for agent, client in CLIENTS.items():
            labeled, unlabeled = split_client(client, 1.0)
            feed(fleet, agent, labeled, unlabeled)
        return model_score(fleet, run_campaign(fleet)["model_version"])
    finally:
        fleet.stop()


def gate_never_regressed(models: list[dict]) -> str:
    """Each champion (or retired one) scored at least what the champion before it scored."""
    ordered = sorted((m for m in models if m["status"] in ("champion", "retired") and m["score"] is not None),
                     key=lambda m: m["version"])
    worse = [(b["version"], a["version"]) for a, b in zip(ordered, ordered[1:]) if b["score"] < a["score"]]
    return "never deployed a worse model" if not worse else f"DEPLOYED WORSE: {worse}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labeled", type=float, default=0.15, help="share of each client's photos kept labeled")
    parser.add_argument("--threshold", type=float, default=0.9, help="labeling.pseudo_threshold")
    parser.add_argument("--max-pseudo-ratio", type=float, default=10.0, help="labeling.max_pseudo_ratio")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pseudo-bench-") as tmp:
        semi = semi_supervised(Path(tmp) / "semi", args)
        reference = fully_labeled(Path(tmp) / "full")
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}; "
          f"campaign {CAMPAIGN['rounds']} rounds x {CAMPAIGN['local_epochs']} epochs, 2 agents; "
          f"{args.labeled:.0%} labeled, pseudo_threshold {args.threshold}, max_pseudo_ratio {args.max_pseudo_ratio}")
    print(f"campaign 1 (human labels only):   gate score {semi['v1']}")
    print(f"campaign 2 (+ pseudo labels):     gate score {semi['v2']} ({semi['second']['status']}: "
          f"{semi['second'].get('reason') or ''})")
    print(f"fully labeled reference:          gate score {reference}")
    for name, row in (("campaign 1", semi["first"]), ("campaign 2", semi["second"])):
        last = (row.get("rounds") or [{}])[-1].get("agents") or []
        print(f"{name} trained on: " + ", ".join(f"{a['agent']} {a['human']} human + {a['pseudo']} pseudo"
                                                 for a in last))
    precision = semi["right"] / semi["pseudo"] if semi["pseudo"] else float("nan")
    print(f"pseudo labels: {semi['pseudo']} of {semi['unlabeled']} unlabeled photos, precision {precision:.3f}; "
          f"{semi['review']} to review")
    print(f"champion gate: {gate_never_regressed(semi['models'])}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
