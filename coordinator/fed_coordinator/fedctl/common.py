"""What every fedctl action shares: where the state is, and how a table looks.

Why: every action finds the coordinator's state the same way (--state-dir, else the
config's service.state_dir) and prints the same way (a table, or --json for scripts).
Strings in that output come from agents and campaigns, so text output goes through
`printable`: a control character (an escape sequence could clear the operator's screen,
set the window title or hide the rest of a line) is shown as its code, never sent.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

# C0 and C1 controls, DEL, and the invisible format characters that reorder or hide text
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def printable(value) -> str:
    """`value` as text safe to write to a terminal (controls shown as \\xNN / \\uNNNN)."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}",
                            str(value))


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
    cells = [[("" if r.get(c) is None else printable(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line([c.upper() for c in columns])] + [line(r) for r in cells])


def when(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def output(args, data, rows: list[dict], columns: list[str]) -> int:
    print(json.dumps(data, default=str) if args.json else table(rows, columns))
    return 0
