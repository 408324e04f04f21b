"""`make demo`: a whole campaign on one machine, SuperLink + 2 SuperNodes on loopback.

With no DATA it generates a small synthetic head/hardhat set offline and splits it per
client; DATA may point at a labeled folder (`<label>/*.jpg`) or at one already laid out as
`dataset_clientN/` + `dataset_server/` (like ../shared/datasets).
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fed_common import logs

from .campaign import CampaignRunner
from .config import CampaignSection
from .flower import FlwrCli, SuperLink
from .local_fleet import REPO, SuperNodeProcess
from .registry import ModelRegistry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"fed_tools_{name}", REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_data(data: str | None, work: Path, clients: int = 2) -> Path:
    """Return a folder with dataset_client1..N and dataset_server/test."""
    if data and (Path(data) / "dataset_client1").is_dir():
        return Path(data)
    laid_out = work / "data"
    if (laid_out / "dataset_client1").is_dir():
        return laid_out
    source = Path(data) if data else work / "synthetic"
    if not data and not source.is_dir():
        _load_tool("synth").generate(source, per_label=60, seed=0)
    _load_tool("split_folder").split_folder(source, laid_out, clients=clients, seed=0)
    return laid_out


@dataclass
class LocalFleet:
    link: SuperLink
    nodes: list[SuperNodeProcess]
    runner: CampaignRunner


@contextmanager
def local_fleet(data_root: Path, state_dir: Path, clients: int = 2):
    """A SuperLink and one SuperNode per dataset_clientN on loopback; all stopped on exit."""
    log = logs.get_logger(component="demo")
    with ExitStack() as stack:
        link = SuperLink(state_dir / "superlink", port=free_port()).start()
        stack.callback(link.stop)
        nodes = []
        for i in range(1, clients + 1):
            node = SuperNodeProcess(f"pi-{i}", link.address, data_root / f"dataset_client{i}",
                                    state_dir / f"agent-{i}", free_port()).start()
            stack.callback(node.stop)
            nodes.append(node)
        cli = FlwrCli(state_dir / "flwr-cli", link.address)
        yield LocalFleet(link, nodes, CampaignRunner(state_dir, cli, ModelRegistry(state_dir / "models"), log))


def run_local_campaign(data_root: Path, state_dir: Path, settings: CampaignSection,
                       clients: int = 2, on_event=lambda e: None):
    """Start a local fleet, run one campaign, stop everything."""
    with local_fleet(data_root, state_dir, clients) as fleet:
        return fleet.runner.run(settings, on_event)


def print_event(event: dict) -> None:
    if event["event"] == "started":
        print(f"campaign started with {event['nodes']} agents", flush=True)
    elif event["event"] == "round":
        extra = ""
        if event["round"] > 0:
            extra = (f"  agents {len(event.get('participants', []))}"
                     f"  bytes/agent down {event.get('bytes_down_per_agent', 0) / 1e3:.0f} KB"
                     f" up {event.get('bytes_up_per_agent', 0) / 1e3:.0f} KB")
        print(f"round {event['round']}: server accuracy {event['server_accuracy']:.3f}"
              f"  loss {event['server_loss']:.3f}{extra}", flush=True)
    elif event["event"] == "failed":
        print(f"campaign failed: {event.get('reason')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fed-demo", description=__doc__)
    p.add_argument("--data", default=None, help="labeled image folder (default: synthetic)")
    p.add_argument("--weights", default="imagenet", help="backbone weights: imagenet or a file")
    p.add_argument("--work", default=str(REPO / "build" / "demo"))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    logs.configure("warning")
    work = Path(args.work).resolve()
    data_root = prepare_data(args.data, work)
    print(f"data: {data_root}", flush=True)
    settings = CampaignSection(server_data_dir=data_root / "dataset_server", weights=args.weights,
                                rounds=args.rounds, local_epochs=args.epochs,
                                batch_size=args.batch_size)
    outcome = run_local_campaign(data_root, work / "state", settings, on_event=print_event)
    if outcome.status != "completed":
        print(f"campaign {outcome.campaign_id} {outcome.status}: {outcome.reason}", file=sys.stderr)
        return 1
    print(f"model v{outcome.model_version} registered at {outcome.model_path}")
    print(f"try: .venv/bin/fedctl --state-dir {work / 'state'} predict IMAGE...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
