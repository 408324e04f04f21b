"""Prometheus exposition, built from the SQLite state on each scrape (prometheus_client).

A fresh registry per scrape keeps the numbers equal to the state: nothing to keep in sync.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from fed_coordinator.api.fleet import fleet_view
from fed_coordinator.state import State


def metrics_text(state: State, online_after: float) -> str:
    reg = CollectorRegistry()
    fleet = fleet_view(state, online_after)
    Gauge("fed_agents_online", "Agents whose last heartbeat is recent", registry=reg).set(
        sum(1 for agent in fleet if agent.online))
    Gauge("fed_agents_registered", "Agents with a token", registry=reg).set(len(fleet))
    age = Gauge("fed_agent_heartbeat_age_seconds", "Seconds since the agent's last heartbeat",
                ["agent"], registry=reg)
    for agent in fleet:
        if agent.heartbeat_age_seconds is not None:
            age.labels(agent.name).set(agent.heartbeat_age_seconds)
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
