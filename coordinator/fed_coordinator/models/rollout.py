"""The rollout's record: which version each agent should run, kept in SQLite.

Why a record of its own and not just "the champion": a new champion reaches the canary
agents first and the rest of the fleet only after the canaries ran it cleanly for the canary
window (models.rollout_engine decides that); until then the others stay on the version
rolled out before. The record survives a restart of the coordinator (it is the `rollouts`
table, one row per champion rolled out, and `pins`), so a restart neither skips the canary
window nor sends a halted version to anyone.

`desired(agent)`, asked on every heartbeat and by the model routes, is therefore:
a pin (`fedctl pin`) if the agent has one; else, for the newest rollout, its version once
complete, its version for a canary while in the canary stage, and the version before it for
everyone else (and for everyone once halted). None means "keep what you run".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from fed_coordinator.state import State

PAUSED_KEY = "rollout_paused"


class Stage(str, Enum):
    CANARY = "canary"  # the canaries have it; the rest wait for the canary window
    COMPLETE = "complete"  # every agent should run it
    HALTED = "halted"  # a canary failed with it; everyone stays on (or goes back to) `previous`


@dataclass(frozen=True)
class Rollout:
    id: int
    version: int
    previous: Optional[int]
    stage: Stage
    canaries: tuple[str, ...]
    reason: str
    started_at: float
    canary_ok_since: Optional[float]
    finished_at: Optional[float]

    def desired(self, agent: str) -> Optional[int]:
        if self.stage is Stage.COMPLETE or (self.stage is Stage.CANARY and agent in self.canaries):
            return self.version
        return self.previous

    def to_json(self) -> dict:
        return {"version": self.version, "previous": self.previous, "stage": self.stage.value,
                "canaries": list(self.canaries), "reason": self.reason, "started_at": self.started_at,
                "canary_ok_since": self.canary_ok_since, "finished_at": self.finished_at}


class RolloutRecord:
    """The rollouts and pins tables (state schema 3) and the pause flag."""

    def __init__(self, state: State) -> None:
        self.state = state

    def current(self) -> Optional[Rollout]:
        rows = self.state.query("SELECT * FROM rollouts ORDER BY id DESC LIMIT 1")
        return _rollout(rows[0]) if rows else None

    def history(self, limit: int = 20) -> list[Rollout]:
        return [_rollout(row) for row in self.state.query("SELECT * FROM rollouts ORDER BY id DESC LIMIT ?",
                                                          (limit,))]

    def desired(self, agent: str) -> Optional[int]:
        pin = self.pins().get(agent)
        if pin is not None:
            return pin
        rollout = self.current()
        return rollout.desired(agent) if rollout else None

    def start(self, version: int, previous: Optional[int], canaries: list[str], stage: Stage = Stage.CANARY,
              reason: str = "") -> Rollout:
        now = time.time()
        self.state.execute("INSERT INTO rollouts(version, previous, stage, canaries, reason, started_at, "
                           "finished_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                           (version, previous, stage.value, json.dumps(sorted(canaries)), reason, now,
                            now if stage is Stage.COMPLETE else None))
        return self.current()

    def canaries_ok_since(self, rollout: Rollout, since: Optional[float]) -> None:
        self.state.execute("UPDATE rollouts SET canary_ok_since=? WHERE id=?", (since, rollout.id))

    def finish(self, rollout: Rollout, stage: Stage, reason: str) -> None:
        self.state.execute("UPDATE rollouts SET stage=?, reason=?, finished_at=? WHERE id=?",
                           (stage.value, reason, time.time(), rollout.id))

    # -- pins and pause --------------------------------------------------------------------------
    def pins(self) -> dict[str, int]:
        return {row["agent"]: row["version"] for row in self.state.query("SELECT agent, version FROM pins")}

    def pin(self, agent: str, version: int) -> None:
        self.state.execute("INSERT INTO pins(agent, version, created_at) VALUES(?, ?, ?) ON CONFLICT(agent) "
                           "DO UPDATE SET version=excluded.version, created_at=excluded.created_at",
                           (agent, version, time.time()))

    def unpin(self, agent: str) -> bool:
        return self.state.execute("DELETE FROM pins WHERE agent=?", (agent,)).rowcount > 0

    def paused(self) -> Optional[float]:
        """Since when the rollout is paused (None: it is not)."""
        value = self.state.get(PAUSED_KEY)
        return float(value["since"]) if isinstance(value, dict) and "since" in value else None

    def set_paused(self, paused: bool) -> None:
        self.state.put(PAUSED_KEY, {"since": time.time()} if paused else None)


def _rollout(row: dict) -> Rollout:
    return Rollout(id=row["id"], version=row["version"], previous=row["previous"], stage=Stage(row["stage"]),
                   canaries=tuple(json.loads(row["canaries"])), reason=row["reason"],
                   started_at=row["started_at"], canary_ok_since=row["canary_ok_since"],
                   finished_at=row["finished_at"])
