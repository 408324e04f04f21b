"""The staged rollout of each champion to the Pis, decided once a second in the main loop.

A new champion goes to the canaries first (`rollout.canaries`, else `canary_fraction` of the
agents reporting, else one agent). Once every canary's heartbeat says it runs the new
version with its self-test passed (state ok: an agent switches only after the self-test),
and has said so for `rollout.canary_minutes`, the rollout is complete and every agent's
desired version is the new one. A canary that reports the version failed (download, size,
hash, signature, load, self-test) halts the rollout with its reason, and so does a canary
that has not reported it running within `canary_timeout_minutes`: the fleet stays on the
version before. `fedctl rollout pause` freezes the rollout where it is (a failing canary
still halts it); `fedctl rollback` makes the previous champion desired everywhere at once.
Everything is in models.rollout's record, so a restart resumes where it was.
"""

from __future__ import annotations

import math
import time
from typing import Optional

from fed_coordinator.api.fleet import AgentRow, fleet_view
from fed_coordinator.models.rollout import Rollout, RolloutRecord, Stage
from fed_coordinator.state import State


class RolloutEngine:
    def __init__(self, state: State, settings, online_after: float, log) -> None:
        self.state, self.settings, self.online_after, self.log = state, settings, online_after, log
        self.record = RolloutRecord(state)

    def desired(self, agent: str) -> Optional[int]:
        return self.record.desired(agent)

    def tick(self, now: Optional[float] = None) -> None:
        now = now or time.time()
        rollout = self.record.current()
        paused = self.record.paused() is not None
        in_canary = rollout is not None and rollout.stage is Stage.CANARY
        states = self.canary_states(rollout) if in_canary else {}
        if in_canary:
            failure = self.canary_failure(rollout, states, now, check_timeout=not paused)
            if failure:
                self.record.finish(rollout, Stage.HALTED, failure)
                self.log.error("rollout_halted", model_version=rollout.version, reason=failure,
                               fleet_stays_on=rollout.previous)
                return
        if paused:
            return
        champion = self.state.champion()
        if champion is not None and (rollout is None or rollout.version != champion):
            self.start(champion, rollout)
        elif in_canary:
            self.advance(rollout, states, now)

    def start(self, version: int, before: Optional[Rollout]) -> Rollout:
        previous = None if before is None else (before.version if before.stage is Stage.COMPLETE
                                                 else before.previous)
        canaries = self.choose_canaries()
        if not canaries:  # nobody to try it on: every agent that turns up gets it
            rollout = self.record.start(version, previous, [], Stage.COMPLETE, "no agents to canary")
        else:
            rollout = self.record.start(version, previous, canaries)
        self.log.info("rollout_started", model_version=version, previous=previous, canaries=canaries,
                      stage=rollout.stage.value, canary_minutes=self.settings.canary_minutes)
        return rollout

    def rollback(self, version: int) -> Rollout:
        """The previous champion desired everywhere now (no canary stage: it ran before)."""
        before = self.record.current()
        rollout = self.record.start(version, before.version if before else None, [], Stage.COMPLETE,
                                    "fedctl rollback")
        self.log.warning("rollout_rolled_back", model_version=version, previous=rollout.previous)
        return rollout

    def choose_canaries(self) -> list[str]:
        rows = fleet_view(self.state, self.online_after)
        registered = {row.name for row in rows}
        if self.settings.canaries:
            chosen = [name for name in self.settings.canaries if name in registered]
            if chosen:
                return chosen
            self.log.warning("rollout_canaries_unknown", canaries=self.settings.canaries,
                             reason="none of them is registered; choosing among the agents reporting")
        # Prefer agents that report a model channel (they fetch models), then any online one.
        candidates = ([row.name for row in rows if row.online and row.heartbeat and row.heartbeat.running_model]
                      or [row.name for row in rows if row.online] or sorted(registered))
        fraction = self.settings.canary_fraction
        count = max(1, math.ceil(fraction * len(candidates))) if fraction else 1
        return sorted(candidates)[:count]

    # -- the canary stage ------------------------------------------------------------------------
    def canary_states(self, rollout: Rollout) -> dict[str, tuple[str, str]]:
        return canary_states(fleet_view(self.state, self.online_after), rollout)

    def canary_failure(self, rollout: Rollout, states: dict[str, tuple[str, str]], now: float,
                       check_timeout: bool = True) -> Optional[str]:
        for name, (verdict, detail) in states.items():
            if verdict == "failed":
                return f"canary {name} failed v{rollout.version}: {detail}"
        waiting = sorted(name for name, (verdict, _) in states.items() if verdict != "ok")
        limit = self.settings.canary_timeout_minutes
        if check_timeout and waiting and now - rollout.started_at > limit * 60:
            return (f"canary {', '.join(waiting)} did not report v{rollout.version} running within "
                    f"{limit:g} minutes")
        return None

    def advance(self, rollout: Rollout, states: dict[str, tuple[str, str]], now: float) -> None:
        # The canaries' states were read once this tick, for the failure check and this.
        all_ok = all(verdict == "ok" for verdict, _ in states.values())
        if not all_ok:
            if rollout.canary_ok_since is not None:  # a canary stopped reporting it ok: the window restarts
                self.record.canaries_ok_since(rollout, None)
            return
        if rollout.canary_ok_since is None:
            self.record.canaries_ok_since(rollout, now)
            self.log.info("rollout_canaries_ok", model_version=rollout.version, canaries=list(rollout.canaries),
                          complete_in_seconds=self.settings.canary_minutes * 60)
        elif now - rollout.canary_ok_since >= self.settings.canary_minutes * 60:
            reason = (f"canaries {', '.join(rollout.canaries)} ran v{rollout.version} "
                      f"for {self.settings.canary_minutes:g} minutes")
            self.record.finish(rollout, Stage.COMPLETE, reason)
            self.log.info("rollout_complete", model_version=rollout.version, reason=reason)


def canary_states(rows: list[AgentRow], rollout: Rollout) -> dict[str, tuple[str, str]]:
    """Per canary: ("ok" | "failed" | "waiting", detail), from heartbeats sent since the start."""
    by_name = {row.name: row for row in rows}
    return {name: _canary_state(by_name.get(name), rollout) for name in rollout.canaries}


def _canary_state(row: Optional[AgentRow], rollout: Rollout) -> tuple[str, str]:
    if row is None:
        return "waiting", "not registered"
    beat = row.heartbeat
    if beat is None or row.last_heartbeat is None or row.last_heartbeat < rollout.started_at:
        return "waiting", "no heartbeat since the rollout started"
    running = beat.running_model
    if running is None:
        return "waiting", "its heartbeat has no model channel (model.public_key_file unset?)"
    if running.state == "failed" and running.desired_version == rollout.version:
        return "failed", running.reason or "no reason given"
    if running.version == rollout.version and running.state == "ok":
        return "ok", f"runs v{rollout.version}"
    return "waiting", f"runs {'v%d' % running.version if running.version else 'nothing'} ({running.state})"
