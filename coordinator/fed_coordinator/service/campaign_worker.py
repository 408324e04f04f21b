"""One campaign at a time, on a worker thread, recorded in the state store.

Why a thread and a loop: the service's main loop must never block (WATCHDOG=1 means "the
loop runs"), and a campaign that failed because the SuperLink restarted under it is worth
one more try, as a new campaign id so the record of the failed one stays.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable

from fed_coordinator.campaigns.runner import CampaignRunner, new_campaign_id
from fed_coordinator.config import CampaignSection
from fed_coordinator.models.policy import ChampionPolicy
from fed_coordinator.state import State

MAX_ATTEMPTS = 2


class CampaignWorker:
    def __init__(self, runner: CampaignRunner, state: State, policy: ChampionPolicy,
                 settings: CampaignSection, superlink_restarts: Callable[[], int], log) -> None:
        self.runner, self.state, self.policy = runner, state, policy
        self.settings, self.log = settings, log
        self._superlink_restarts = superlink_restarts
        self._thread: threading.Thread | None = None

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, trigger: str, slot: datetime | None) -> str:
        campaign_id = new_campaign_id()
        slot_text = slot.isoformat() if slot else None
        self.state.campaign_started(campaign_id, trigger, slot_text)
        self._thread = threading.Thread(target=self._body, args=(campaign_id, slot_text),
                                        name="campaign", daemon=True)
        self._thread.start()
        return campaign_id

    def _body(self, campaign_id: str, slot: str | None) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            restarts_before = self._superlink_restarts()
            status = self._attempt(campaign_id)
            if status != "failed" or self._superlink_restarts() == restarts_before or attempt == MAX_ATTEMPTS:
                return
            new_id = new_campaign_id()
            self.log.warning("campaign_resubmitted", campaign=campaign_id, new_campaign=new_id,
                             reason="the SuperLink restarted during the run")
            self.state.campaign_started(new_id, "resubmit", slot, attempt=attempt + 1)
            campaign_id = new_id

    def _attempt(self, campaign_id: str) -> str:
        """One run of a campaign, recorded; returns its status ("crashed" is never retried)."""
        log = self.log.bind(campaign=campaign_id)

        def on_event(event: dict) -> None:
            if event["event"] == "submitted":
                self.state.campaign_run_id(campaign_id, event["run_id"])
            elif event["event"] == "round":
                self.state.round_recorded(campaign_id, event)

        try:
            outcome = self.runner.run(self.settings, on_event, cid=campaign_id)
        except Exception as exc:  # noqa: BLE001 - recorded, never kills the service
            log.exception("campaign_crashed")
            self.state.campaign_finished(campaign_id, "failed", f"internal error: {exc}", None)
            return "crashed"
        if outcome.model_version is not None:
            # Before the campaign reads as finished: whoever waits for it sees the gate's verdict.
            try:
                self.policy.judge(outcome.model_version, campaign_id, log)
            except Exception as exc:  # noqa: BLE001 - the model stays registered, unpromoted
                log.exception("champion_gate_failed")
                self.policy.gate_failed(outcome.model_version, campaign_id, exc)
        self.state.campaign_finished(campaign_id, outcome.status, outcome.reason, outcome.model_version)
        return outcome.status
