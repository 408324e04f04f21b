"""Each agent's field summaries over time (state schema 4), kept bounded, and the field view.

Why one row per heartbeat: the agent sends `field` as a delta (an accepted heartbeat carries
one model version's counts not yet taken), so summing stored rows counts each photo once and
any window's totals are sums. A row is written only when the summary counted images (`images:
0` says nothing new), in the same transaction as the heartbeat itself (`State.heartbeat(...,
also=...)`): the agent sends its counts again unless the heartbeat was taken, so a row must
never be kept without it. Each write also deletes every row older than
`monitoring.history_days` and all but the agent's newest `history_max_rows_per_agent`.

The field view of an agent (fedctl fleet, the status page, /metrics, the fleet API): totals
of its running model version (the one its last heartbeat says it runs; without one, the
version of its newest summary) over the last `monitoring.field_window_hours`, and the drift
check of models.drift for that version.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

from fed_common.heartbeat import FieldSummary

from fed_coordinator.config import MonitoringSection
from fed_coordinator.models.drift import DriftCheck, Window, verdict
from fed_coordinator.state import State

_COLUMNS = ("received_at, model_version, images, low_confidence_images, low_confidence, confidence_sum, "
            "labeled, correct, predicted")


def record_statements(agent: str, summary: Optional[FieldSummary], now: float,
                      settings: MonitoringSection) -> list[tuple[str, tuple]]:
    """What storing a heartbeat's field summary takes (for `State.heartbeat(also=...)`):
    the row and the pruning; nothing when it counted no images."""
    if summary is None or summary.images == 0:
        return []
    confidence_sum = None if summary.mean_confidence is None else summary.mean_confidence * summary.images
    row = (agent, now, summary.model_version, summary.images, summary.low_confidence_images,
           summary.low_confidence, confidence_sum, summary.labeled, summary.correct,
           json.dumps(summary.predicted, sort_keys=True))
    return [
        (f"INSERT INTO field_summaries(agent, {_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row),
        ("DELETE FROM field_summaries WHERE received_at < ?", (now - settings.history_days * 86400,)),
        # all but the newest N of this agent (the N-th newest's time: older ones go)
        ("DELETE FROM field_summaries WHERE agent=? AND received_at < (SELECT received_at FROM "
         "field_summaries WHERE agent=? ORDER BY received_at DESC LIMIT 1 OFFSET ?)",
         (agent, agent, settings.history_max_rows_per_agent - 1)),
    ]


@dataclass(frozen=True)
class FieldView:
    """What an agent's running model saw in the field over the window (the summaries summed:
    a FieldSummary again, so its shares and checks are the contract's), and its drift check."""

    totals: FieldSummary
    window_hours: float
    drift: DriftCheck

    def text(self) -> str:
        """`42 img, 12% low, acc 0.95` (the accuracy only when some images had a human label)."""
        totals = self.totals
        if not totals.images:
            return "0 img"
        words = f"{totals.images} img, {totals.low_confidence_share:.0%} low"
        return words if totals.field_accuracy is None else f"{words}, acc {totals.field_accuracy:.2f}"

    def to_json(self) -> dict:
        return {**self.totals.model_dump(), "window_hours": self.window_hours,
                "low_confidence_share": self.totals.low_confidence_share,
                "field_accuracy": self.totals.field_accuracy, "drifting": self.drift.drifting,
                "drift_reason": self.drift.reason, "drift": self.drift.to_json()}


_OF_VERSION = "FROM field_summaries WHERE agent=? AND model_version IS ?"


def _drift(state: State, agent: str, version: Optional[int], settings: MonitoringSection) -> DriftCheck:
    """models.drift's verdict, its two windows summed here: the recent one row by row (every
    stored row counted at least one image, so `drift_min_images` rows always suffice), the
    baseline in SQL (it may be a week of rows)."""
    need = settings.drift_min_images
    latest = state.query(f"SELECT id, received_at, images, low_confidence_images {_OF_VERSION} "
                         "ORDER BY received_at DESC, id DESC LIMIT ?", (agent, version, need))
    recent, oldest = Window(), None
    for row in latest:
        if recent.images >= need:
            break
        recent, oldest = recent.plus(row["images"], row["low_confidence_images"]), row
    baseline = Window()
    if oldest is not None and recent.images >= need:
        (row,) = state.query(
            f"SELECT COALESCE(SUM(images), 0) AS images, COALESCE(SUM(low_confidence_images), 0) AS low "
            f"{_OF_VERSION} AND (received_at, id) < (?, ?) AND received_at >= ?",
            (agent, version, oldest["received_at"], oldest["id"],
             oldest["received_at"] - settings.baseline_days * 86400))
        baseline = Window(row["images"], row["low"])
    return verdict(version, recent, baseline, settings)


def _totals(state: State, agent: str, version: Optional[int], since: float, threshold: float) -> FieldSummary:
    (sums,) = state.query(
        "SELECT COALESCE(SUM(images), 0) AS images, COALESCE(SUM(low_confidence_images), 0) AS low, "
        "SUM(confidence_sum) AS confidence_sum, "
        "COALESCE(SUM(CASE WHEN confidence_sum IS NULL THEN 0 ELSE images END), 0) AS rated, "
        f"COALESCE(SUM(labeled), 0) AS labeled, COALESCE(SUM(correct), 0) AS correct {_OF_VERSION} "
        "AND received_at >= ?", (agent, version, since))
    predicted = state.query(
        "SELECT j.key AS label, SUM(j.value) AS n FROM field_summaries AS f, json_each(f.predicted) AS j "
        "WHERE f.agent=? AND f.model_version IS ? AND f.received_at >= ? GROUP BY j.key ORDER BY j.key",
        (agent, version, since))
    mean = min(1.0, sums["confidence_sum"] / sums["rated"]) if sums["rated"] else None  # min: float sums
    return FieldSummary(model_version=version, images=sums["images"], low_confidence=threshold,
                        low_confidence_images=sums["low"], mean_confidence=mean, labeled=sums["labeled"],
                        correct=sums["correct"], predicted={row["label"]: row["n"] for row in predicted})


def field_view(state: State, agent: str, running_version: Optional[int], now: float,
               settings: MonitoringSection) -> Optional[FieldView]:
    """The agent's field view (see the module's text); None when it never reported a field image."""
    newest = state.query("SELECT model_version, low_confidence FROM field_summaries WHERE agent=? "
                         "ORDER BY received_at DESC, id DESC LIMIT 1", (agent,))
    if not newest:
        return None
    version = running_version if running_version is not None else newest[0]["model_version"]
    totals = _totals(state, agent, version, now - settings.field_window_hours * 3600, newest[0]["low_confidence"])
    return FieldView(totals, settings.field_window_hours, _drift(state, agent, version, settings))


@dataclass(frozen=True)
class HourPoint:
    hour: int  # hours since the epoch (UTC)
    images: int
    low_confidence_images: int

    @property
    def share(self) -> float:
        return self.low_confidence_images / self.images


def hourly_low_confidence(state: State, agent: str, now: float, days: float) -> list[HourPoint]:
    """The agent's low-confidence share per hour over the last `days`, every model version
    (the chart on the status page); hours without images are left out."""
    since = (math.floor(now / 3600) - math.ceil(days * 24) + 1) * 3600
    rows = state.query("SELECT CAST(received_at / 3600 AS INTEGER) AS hour, SUM(images) AS images, "
                       "SUM(low_confidence_images) AS low FROM field_summaries WHERE agent=? AND "
                       "received_at >= ? GROUP BY hour ORDER BY hour", (agent, since))
    return [HourPoint(row["hour"], row["images"], row["low"]) for row in rows if row["images"]]
