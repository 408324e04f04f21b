"""Which model is the champion: the gate's verdict, promote by hand, rollback, redeploy.

Why a room of its own: the rules (one champion at a time, the old one retires, a rollback
goes to the newest retired champion, every new champion is queued for deployment) were
spread over the service's main loop and its command dispatcher. Here they are one class
over the state store, so the service, fedctl's commands and the tests share one policy.
The status names are an enum because the state, the API and fedctl all read them.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Callable

from fed_coordinator.config import ChampionSection
from fed_coordinator.models.champion import gate
from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.state import State


class ModelStatus(str, enum.Enum):
    CANDIDATE = "candidate"      # registered, not (yet) judged
    CHAMPION = "champion"        # the model the fleet should run
    REJECTED = "rejected"        # did not beat the champion
    RETIRED = "retired"          # an earlier champion (a rollback target)
    ROLLED_BACK = "rolled-back"  # a champion that was rolled back (never a target again)


class PolicyError(ValueError):
    """An operator's request the policy refuses (names the version and why)."""


class ChampionPolicy:
    def __init__(self, state: State, registry: ModelRegistry, test_dir: Path, labels: list[str],
                 rules: ChampionSection, deploy_queued: Callable[[], None]) -> None:
        self.state, self.registry = state, registry
        self.test_dir, self.labels, self.rules = Path(test_dir), list(labels), rules
        self._deploy_queued = deploy_queued

    def judge(self, version: int, campaign_id: str | None, log) -> None:
        """Run the champion gate on a new model and record its verdict (promotes on a win)."""
        verdict = gate(self.registry, version, self.state.champion(), self.test_dir,
                       self.labels, self.rules.margin, self.rules.min_accuracy)
        status = ModelStatus.CHAMPION if verdict.promoted else ModelStatus.REJECTED
        self.state.model_recorded(version, campaign_id, verdict.new_score, status.value, verdict.reason)
        if verdict.promoted:
            self._make_champion(version, verdict.reason)
        log.info("champion_gate", version=version, promoted=verdict.promoted,
                 new_score=verdict.new_score, champion=verdict.champion_version,
                 champion_score=verdict.champion_score, reason=verdict.reason,
                 gate_images=verdict.images)

    def gate_failed(self, version: int, campaign_id: str | None, error: Exception) -> None:
        """The gate itself failed: the model stays registered as a candidate, unpromoted."""
        self.state.model_recorded(version, campaign_id, None, ModelStatus.CANDIDATE.value,
                                  f"champion gate failed: {error}")

    def promote(self, version: int) -> str:
        """`fedctl promote VERSION`: make a registered model the champion by hand."""
        self._require_registered(version)
        if self.state.champion() == version:
            raise PolicyError(f"v{version} is already the champion")
        if version not in {row["version"] for row in self.state.models()}:
            self.state.model_recorded(version, None, None, ModelStatus.CANDIDATE.value, "")
        self._make_champion(version, "promoted by hand (fedctl promote)")
        return f"v{version} is the champion; deploy queued"

    def rollback(self) -> str:
        """`fedctl rollback`: the newest earlier champion comes back; the current one is
        marked rolled-back so a second rollback goes further back, not forth."""
        champion = self.state.champion()
        retired = [row["version"] for row in self.state.models()
                   if row["status"] == ModelStatus.RETIRED.value and row["version"] != champion]
        if champion is None or not retired:
            raise PolicyError("no earlier champion to roll back to")
        target = max(retired)
        self.state.set_model_status(champion, ModelStatus.ROLLED_BACK.value, f"rolled back to v{target}")
        self.state.set_champion(None)
        self._make_champion(target, f"rollback from v{champion} (fedctl rollback)")
        return f"v{target} is the champion again; deploy queued"

    def redeploy(self, version: int) -> str:
        """`fedctl deploy VERSION`: queue a registered model for Edge Impulse again."""
        self._require_registered(version)
        self.state.deployment_queued(version)
        self._deploy_queued()
        return f"deploy of v{version} queued"

    def _require_registered(self, version: int) -> None:
        if version not in self.registry.versions():
            raise PolicyError(f"no registered model v{version}")

    def _make_champion(self, version: int, reason: str) -> None:
        previous = self.state.champion()
        if previous is not None and previous != version:
            self.state.set_model_status(previous, ModelStatus.RETIRED.value, f"replaced by v{version}")
        self.state.set_model_status(version, ModelStatus.CHAMPION.value, reason)
        self.state.set_champion(version)
        self.state.deployment_queued(version)
        self._deploy_queued()
