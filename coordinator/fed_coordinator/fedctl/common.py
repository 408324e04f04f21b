"""What every fedctl action shares: where the state is, and how a table looks.

Why: every action finds the coordinator's state the same way (--state-dir, else the
config's service.state_dir) and prints the same way (a table, or --json for scripts).
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def state_dir(args) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    from fed_coordinator.config import ConfigError, load_config

    try:
        return Path(load_config(args.config).service.state_dir)
    except ConfigError as exc:
        raise SystemExit(f"fedctl: {exc} (or pass --state-dir)")


def open_state(args):
    from fed_coordinator.state import State

    db = state_dir(args) / "coordinator.db"
    if not db.exists():
        raise SystemExit(f"fedctl: no coordinator state at {db}")
    return State(db)


def open_registry(args):
    from fed_coordinator.models.registry import ModelRegistry

    return ModelRegistry(state_dir(args) / "models")


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line([c.upper() for c in columns])] + [line(r) for r in cells])


def when(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def output(args, data, rows: list[dict], columns: list[str]) -> int:
    print(json.dumps(data, default=str) if args.json else table(rows, columns))
    return 0
