"""The fleet as readers see it: one typed row per agent, from the validated heartbeats.

Every reader (fleet API, status page, /metrics, fedctl, the service's STATUS= line) goes
through `fleet_view`, and each row carries the agent's last heartbeat as a
`fed_common.heartbeat.Heartbeat` (or None), never a dict: the API validated it before it was
stored, and one stored before the schema existed reads as None instead of raising.
`labels_used` is what each agent trained on in a round (fedctl campaigns, the status page).
`field_view` is what the agent's running model saw in the field and whether it is drifting
(api.field_history); it is read from the history on first use only, since the rollout
engine reads the rows every second and never needs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Callable, Optional

from fed_common.heartbeat import Heartbeat

from fed_coordinator.api.clock_view import agent_clock_problems, clock_json
from fed_coordinator.api.field_history import FieldView, field_view
from fed_coordinator.api.pi_health_view import pi_health_json, pi_problems
from fed_coordinator.config import MonitoringSection
from fed_coordinator.state import State


@dataclass(frozen=True)
class AgentRow:
    name: str
    online: bool
    heartbeat_age_seconds: Optional[float]
    address: Optional[str]
    heartbeat: Optional[Heartbeat]
    last_heartbeat: Optional[float] = None  # when it was received (time.time())
    field_source: Optional[Callable[[], Optional[FieldView]]] = field(default=None, repr=False, compare=False)

    @cached_property
    def field_view(self) -> Optional[FieldView]:
        """The running model's field numbers and drift check; None: no field image reported."""
        return self.field_source() if self.field_source else None

    @property
    def supernode_state(self) -> Optional[str]:
        return self.heartbeat.supernode.state if self.heartbeat else None

    @property
    def image_total(self) -> int:
        return self.heartbeat.images.total if self.heartbeat else 0

    @property
    def image_status(self) -> Optional[dict[str, int]]:
        """The stored images by who labeled them: a person (`human`), the running model
        (`pseudo`), nobody yet: waiting for a person (`review`) or not classified yet
        (`unlabeled`); None without a heartbeat."""
        if self.heartbeat is None:
            return None
        images = self.heartbeat.images
        return {"human": images.total, "pseudo": images.pseudo, "review": images.review,
                "unlabeled": images.unlabeled}

    @property
    def images_text(self) -> Optional[str]:
        """`120 human, 30 pseudo, 12 review, 4 unlabeled`."""
        counts = self.image_status
        return None if counts is None else ", ".join(f"{count} {status}" for status, count in counts.items())

    @property
    def model(self) -> Optional[str]:
        """`v3 ok`, `v2 updating`, `v2 failed` (with the desired version when it differs)."""
        running = self.heartbeat.running_model if self.heartbeat else None
        if running is None:
            return None
        text = f"{'v%d' % running.version if running.version else 'none'} {running.state}"
        if running.desired_version and running.desired_version != running.version:
            text += f" (wants v{running.desired_version})"
        return text

    @property
    def problem(self) -> Optional[str]:
        """What the agent says is wrong with it, in words (None: nothing)."""
        beat = self.heartbeat
        if beat is None or not (beat.disk_full or beat.store_error):
            return None
        free = "" if beat.disk_free_bytes is None else f", {beat.disk_free_bytes // 1024} KiB free"
        return ("disk full: inbox stopped" if beat.disk_full else (beat.store_error or "")) + free

    @property
    def drifting(self) -> bool:
        return self.field_view is not None and self.field_view.drift.drifting

    @property
    def problems(self) -> list[str]:
        """What the agent reports wrong, and the drift the coordinator sees in its field numbers."""
        found = [self.problem] if self.problem else []
        found += pi_problems(self.heartbeat)  # under-voltage, too hot, a declined train message
        found += agent_clock_problems(self.heartbeat)  # ahead or behind beyond Flower's limits, unsynchronised
        if self.drifting:
            found.append(f"DRIFT {self.field_view.drift.reason}")
        return found

    @property
    def model_detail(self) -> Optional[str]:
        """`model` with the self-test the running model passed: `v3 ok, self-test 0.95 (40 img)`."""
        running = self.heartbeat.running_model if self.heartbeat else None
        if running is None or running.self_test_accuracy is None:
            return self.model
        return f"{self.model}, self-test {running.self_test_accuracy:.2f} ({running.self_test_images} img)"

    def to_json(self) -> dict[str, Any]:
        """The API's shape (kept from before the schema, so scripts keep working)."""
        beat = self.heartbeat
        return {
            "name": self.name, "online": self.online, "address": self.address,
            "heartbeat_age_seconds": self.heartbeat_age_seconds,
            "supernode_state": self.supernode_state,
            "node_id": beat.supernode.node_id if beat else None,
            "version": beat.version if beat else None,
            "last_training": beat.last_training.model_dump() if beat and beat.last_training else None,
            "images": beat.images.model_dump() if beat else None,
            "image_status": self.image_status,
            "disk_free_bytes": beat.disk_free_bytes if beat else None,
            "disk_full": beat.disk_full if beat else None,
            "store_error": beat.store_error if beat else None,
            "problem": self.problem,
            "problems": self.problems,
            "running_model": beat.running_model.model_dump() if beat and beat.running_model else None,
            "cpu_temperature_c": beat.cpu_temperature_c if beat else None,
            "pi_health": pi_health_json(beat),
            "clock": clock_json(beat),
            "field": self.field_view.to_json() if self.field_view else None,
        }


def labels_used(agents: list[dict]) -> str | None:
    """What each agent trained on in a round (`State.campaigns()`' rounds[].agents), as the
    campaign readers show it: `pi-1 24 human + 10 pseudo, pi-2 30 human + 0 pseudo`
    (`pi-1 24 examples` from a ClientApp that does not report its labels; None: no agent)."""
    parts = []
    for a in agents:
        if not a.get("agent"):
            continue
        if a.get("human") is None:
            parts.append(f"{a['agent']} {a.get('examples')} examples")
        else:
            parts.append(f"{a['agent']} {int(a['human'])} human + {int(a.get('pseudo') or 0)} pseudo")
    return ", ".join(parts) or None


def fleet_view(state: State, online_after: float, now: float | None = None,
               monitoring: MonitoringSection | None = None) -> list[AgentRow]:
    now = now or time.time()
    settings = monitoring or MonitoringSection()
    rows = []
    for agent in state.agents():
        seen = agent["last_heartbeat"]
        age = None if seen is None else round(now - seen, 1)
        beat = Heartbeat.from_stored(agent["last_payload"])
        running = beat.running_model.version if beat and beat.running_model else None
        rows.append(AgentRow(name=agent["name"], online=age is not None and age <= online_after,
                             heartbeat_age_seconds=age, address=agent["address"], heartbeat=beat,
                             last_heartbeat=seen,
                             field_source=partial(field_view, state, agent["name"], running, now, settings)))
    return rows
