"""`make demo`: the product on one machine: fed-coordinator and 2 fed-agent daemons on loopback.

The photos go into the agents' inboxes, `fedctl run-now` starts a campaign and
`fedctl campaigns --follow` prints its rounds; the state stays in the work folder.

With no DATA it generates a small synthetic head/hardhat set offline and splits it per
client; DATA may point at a labeled folder (`<label>/*.jpg`) or at one already laid out as
`dataset_clientN/` + `dataset_server/` (like ../shared/datasets).
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

from fed_common import logs
from fed_coordinator.api.fleet import fleet_view
from fed_coordinator.state import State
from fedapp.run_config import RunSettings

from fed_demo.local_fleet import REPO
from fed_demo.services import DemoFleet, drop_photos, inbox_drained, wait_until


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


def _default(field: str) -> int:
    return RunSettings.model_fields[field].default


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fed-demo", description=__doc__)
    p.add_argument("--data", default=None, help="labeled image folder (default: synthetic)")
    p.add_argument("--weights", default="imagenet", help="backbone weights: imagenet or a file")
    p.add_argument("--work", default=str(REPO / "build" / "demo"))
    p.add_argument("--agents", type=int, default=2, help="fed-agent daemons (one per dataset_clientN)")
    # The campaign's shape defaults to the one set of defaults (fedapp's RunSettings).
    p.add_argument("--rounds", type=int, default=_default("rounds"))
    p.add_argument("--epochs", type=int, default=_default("local_epochs"))
    p.add_argument("--batch-size", type=int, default=_default("batch_size"))
    p.add_argument("--serve", action="store_true",
                   help="keep the coordinator and agents running after the campaign (Ctrl-C stops)")
    args = p.parse_args(argv)
    logs.configure("warning")
    work = Path(args.work).resolve()
    data_root = prepare_data(args.data, work, clients=args.agents)
    print(f"data: {data_root}", flush=True)
    settings = {"weights": args.weights, "rounds": args.rounds, "local_epochs": args.epochs,
                "batch_size": args.batch_size}
    with ExitStack() as stack:
        fleet = DemoFleet(work, data_root, settings, args.agents, stack)
        return run_demo(fleet, serve=args.serve)


def run_demo(fleet: DemoFleet, serve: bool) -> int:
    fleet.start_coordinator()
    print(f"fed-coordinator running; status page: {fleet.status_page}", flush=True)
    inboxes = [fleet.start_agent(index) for index in range(1, fleet.clients + 1)]
    for index, inbox in enumerate(inboxes, start=1):
        count = drop_photos(fleet.data_root / f"dataset_client{index}", inbox)
        print(f"pi-{index}: {count} photos dropped into {inbox}", flush=True)
    wait_until(lambda: all(inbox_drained(inbox) for inbox in inboxes), 600, "inboxes drained")
    wait_until(lambda: _connected(fleet) >= fleet.clients, 300, "agents connected")
    print(fleet.fedctl("run-now").stdout.strip(), flush=True)
    status = fleet.fedctl("campaigns", "--follow", check=False, capture=False).returncode
    fleet.fedctl("models", capture=False)
    state = f"--state-dir {fleet.state_dir}"
    print(f"\nstatus page: {fleet.status_page}\n"
          f"try: .venv/bin/fedctl {state} fleet | campaigns | models | predict IMAGE...", flush=True)
    if serve:
        print("serving; Ctrl-C stops the coordinator and the agents", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return status


def _connected(fleet: DemoFleet) -> int:
    """Agents whose last heartbeat is fresh and says their SuperNode is connected (the state
    the fleet table shows, read in-process rather than by polling fedctl)."""
    database = fleet.state_dir / "coordinator.db"
    if not database.is_file():
        return 0
    rows = fleet_view(State(database), online_after=60)
    return sum(1 for row in rows if row.online and row.supernode_state == "connected")


if __name__ == "__main__":
    sys.exit(main())
