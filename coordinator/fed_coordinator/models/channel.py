"""Which model each agent should run, and the signed manifest and file it fetches.

Why a class of its own: the heartbeat reply tells each agent its desired version (so agents
need no extra polling), and the two model routes serve exactly that version; both ask here.
Which version that is per agent is the staged rollout's decision (models.rollout: canaries
first, pins); manifests are signed once per version and kept.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from fed_coordinator.models.manifest import KINDS, load_signing_key, signed_manifest
from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.models.rollout import RolloutRecord


class ModelChannel:
    def __init__(self, rollout: RolloutRecord, registry: ModelRegistry, signing_key_file: Path,
                 kind: str = "int8") -> None:
        self.rollout, self.registry, self.kind = rollout, registry, kind
        self.key = load_signing_key(signing_key_file)  # fails at start, naming the file
        self._signed: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def desired(self, agent: str) -> Optional[int]:
        """The version `agent` should run (None: nothing yet)."""
        return self.rollout.desired(agent)

    def manifest(self, version: int) -> bytes:
        with self._lock:
            if version not in self._signed:
                self._signed[version] = signed_manifest(self.registry, version, self.key,
                                                        self.kind).model_dump_json().encode()
            return self._signed[version]

    def file(self, version: int) -> Path:
        return self.registry.path(version) / KINDS[self.kind]
