"""Prometheus exposition, built from the SQLite state on each scrape (prometheus_client).

A fresh registry per scrape keeps the numbers equal to the state: nothing to keep in sync.
The per-agent field gauges are the field view's (api.field_history: the running version's
totals over `monitoring.field_window_hours`), so they are gauges, not counters: old images
leave the window. `fed_agent_drifting` is there for every agent (0 or 1), so an alert can be
written on it alone. `fed_agent_images{agent, status}` is each agent's stored images by who
labeled them (human, pseudo, review, unlabeled), from its last heartbeat.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from fed_coordinator.api.clock_view import clock_gauges
from fed_coordinator.api.fleet import AgentRow, fleet_view
from fed_coordinator.api.pi_health_view import pi_health_gauges
from fed_coordinator.config import MonitoringSection
from fed_coordinator.state import State


def _field_gauges(reg: CollectorRegistry, fleet: list[AgentRow]) -> None:
    def gauge(name: str, text: str) -> Gauge:
        return Gauge(name, text, ["agent"], registry=reg)

    images = gauge("fed_agent_field_images", "Images the running model classified in the field window")
    low = gauge("fed_agent_field_low_confidence_share", "Share of those below the agent's confidence threshold")
    confidence = gauge("fed_agent_field_mean_confidence", "Mean top-label confidence in the field window")
    accuracy = gauge("fed_agent_field_accuracy", "Field accuracy on the images with a human label")
    drifting = gauge("fed_agent_drifting", "1: low-confidence share well above the agent's own baseline")
    self_test = gauge("fed_agent_model_self_test_accuracy", "Self-test accuracy the running model passed")
    for agent in fleet:
        view = agent.field_view
        drifting.labels(agent.name).set(int(agent.drifting))
        running = agent.heartbeat.running_model if agent.heartbeat else None
        if running is not None and running.self_test_accuracy is not None:
            self_test.labels(agent.name).set(running.self_test_accuracy)
        if view is None:
            continue
        images.labels(agent.name).set(view.totals.images)
        for metric, value in ((low, view.totals.low_confidence_share), (confidence, view.totals.mean_confidence),
                              (accuracy, view.totals.field_accuracy)):
            if value is not None:
                metric.labels(agent.name).set(value)


def metrics_text(state: State, online_after: float, monitoring: MonitoringSection | None = None) -> str:
    reg = CollectorRegistry()
    fleet = fleet_view(state, online_after, monitoring=monitoring)
    Gauge("fed_agents_online", "Agents whose last heartbeat is recent", registry=reg).set(
        sum(1 for agent in fleet if agent.online))
    Gauge("fed_agents_registered", "Agents with a token", registry=reg).set(len(fleet))
    age = Gauge("fed_agent_heartbeat_age_seconds", "Seconds since the agent's last heartbeat",
                ["agent"], registry=reg)
    for agent in fleet:
        if agent.heartbeat_age_seconds is not None:
            age.labels(agent.name).set(agent.heartbeat_age_seconds)
    images = Gauge("fed_agent_images", "Stored images by status: human / pseudo labels, waiting for review, "
                   "not classified yet", ["agent", "status"], registry=reg)
    for agent in fleet:
        for status, count in (agent.image_status or {}).items():
            images.labels(agent.name, status).set(count)
    _field_gauges(reg, fleet)
    pi_health_gauges(reg, fleet)
    clock_gauges(reg, fleet)
    campaigns = state.campaigns(1000)
    outcomes = Counter("fed_campaigns", "Campaigns by outcome", ["status"], registry=reg)
    for c in campaigns:
        outcomes.labels(c["status"]).inc()
    done = [c for c in campaigns if c["finished_at"] and c["status"] != "skipped"]
    if done:
        last = done[0]
        Gauge("fed_last_campaign_duration_seconds", "Duration of the last campaign", registry=reg).set(
            last["finished_at"] - last["started_at"])
        if last["rounds"]:
            Gauge("fed_last_campaign_server_accuracy", "Server accuracy after the last round",
                  registry=reg).set(last["rounds"][-1]["server_accuracy"] or 0)
    deploys = Counter("fed_deployments", "Edge Impulse deployments by outcome", ["status"], registry=reg)
    for d in state.deployments():
        deploys.labels(d["status"]).inc()
    Gauge("fed_champion_version", "Model version currently champion (0: none)", registry=reg).set(
        state.champion() or 0)
    Gauge("fed_metrics_generated_timestamp", "When this scrape was built", registry=reg).set(time.time())
    return generate_latest(reg).decode()
