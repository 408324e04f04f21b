"""The service's side of fedctl's command queue (run-now, promote, deploy, rollback).

Why a queue in SQLite: fedctl runs as another process (often another user); the service is
the only one that may start a campaign or change the champion, so fedctl writes a command
row and waits for this module's answer in the same row.
"""

from __future__ import annotations

from fed_coordinator.models.policy import ChampionPolicy, PolicyError
from fed_coordinator.service.campaign_worker import CampaignWorker
from fed_coordinator.state import State


class CommandHandler:
    def __init__(self, state: State, policy: ChampionPolicy, campaigns: CampaignWorker, log) -> None:
        self.state, self.policy, self.campaigns, self.log = state, policy, campaigns, log

    def handle_pending(self) -> None:
        for command in self.state.commands_pending():
            ok, result = True, ""
            try:
                result = self.answer(command["kind"], command["arg"])
            except (ValueError, KeyError) as exc:  # PolicyError included: refused, not crashed
                ok, result = False, str(exc)
            self.state.command_done(command["id"], ok, result)
            self.log.info("command", kind=command["kind"], arg=command["arg"], ok=ok, result=result)

    def answer(self, kind: str, arg: str | None) -> str:
        if kind == "run-now":
            if self.campaigns.running():
                raise PolicyError("a campaign is already running")
            return f"started campaign {self.campaigns.start('run-now', None)}"
        if kind == "promote":
            return self.policy.promote(_version(arg))
        if kind == "deploy":
            return self.policy.redeploy(_version(arg))
        if kind == "rollback":
            return self.policy.rollback()
        raise PolicyError(f"unknown command {kind!r}")


def _version(arg: str | None) -> int:
    try:
        return int(arg or "")
    except ValueError:
        raise PolicyError(f"version must be a whole number, got {arg!r}") from None
