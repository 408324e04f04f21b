"""The service's side of fedctl's command queue (run-now, promote, deploy, rollback, and the
rollout's pause, resume, pin and unpin).

Why a queue in SQLite: fedctl runs as another process (often another user); the service is
the only one that may start a campaign or change the champion, so fedctl writes a command
row and waits for this module's answer in the same row.
"""

from __future__ import annotations

from fed_coordinator.models.policy import ChampionPolicy, PolicyError
from fed_coordinator.models.rollout import Stage
from fed_coordinator.models.rollout_engine import RolloutEngine
from fed_coordinator.service.campaign_worker import CampaignWorker
from fed_coordinator.state import State


class CommandHandler:
    def __init__(self, state: State, policy: ChampionPolicy, campaigns: CampaignWorker, log,
                 rollout: RolloutEngine | None = None) -> None:
        self.state, self.policy, self.campaigns, self.log = state, policy, campaigns, log
        self.rollout = rollout

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
            answer = self.policy.rollback()
            if self.rollout is not None:  # the earlier champion goes to every Pi at once
                self.rollout.rollback(self.state.champion())
                answer += "; every agent's desired model is now that version"
            return answer
        if kind.startswith("rollout-") or kind in ("pin", "unpin"):
            return self.rollout_command(kind, arg)
        raise PolicyError(f"unknown command {kind!r}")

    def rollout_command(self, kind: str, arg: str | None) -> str:
        if self.rollout is None:
            raise PolicyError("there is no rollout: rollout.signing_key_file is not set")
        record = self.rollout.record
        if kind in ("rollout-pause", "rollout-resume"):
            record.set_paused(kind == "rollout-pause")
            if kind == "rollout-pause":
                return "rollout paused: no new version goes out until `fedctl rollout resume`"
            current = record.current()
            if current is not None and current.stage is Stage.HALTED:
                # The canary keeps its refusal of that version: only another version can go out.
                return (f"rollout resumed; v{current.version} stays halted ({current.reason}): "
                        "promote a fixed version to roll out again")
            return "rollout resumed"
        agent, _, version = (arg or "").partition(" ")
        if agent not in {row["name"] for row in self.state.agents()}:
            raise PolicyError(f"no registered agent {agent!r}")
        if kind == "unpin":
            return f"{agent} unpinned" if record.unpin(agent) else f"{agent} was not pinned"
        pinned = _version(version)
        if pinned not in self.policy.registry.versions():
            raise PolicyError(f"no registered model v{pinned}")
        record.pin(agent, pinned)
        return f"{agent} pinned to v{pinned}: it runs that version whatever the rollout says, until unpinned"


def _version(arg: str | None) -> int:
    try:
        return int(arg or "")
    except ValueError:
        raise PolicyError(f"version must be a whole number, got {arg!r}") from None
