"""The SuperNode's node-config (agent -> ClientApp) and the last-training record (back).

The agent starts `flower-supernode --node-config '<string>'`; Flower hands the parsed keys
to every ClientApp message as `context.node_config`. Both ends use `NodeConfig`, so a key
renamed on one side fails in a test, not on a Pi at 2 a.m. The ClientApp answers with a
`LastTraining` record in the status file, which the agent's heartbeat and STATUS= line read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .files import atomic_write

# node-config key -> NodeConfig field
_KEYS = {"data-dir": "data_dir", "cache-dir": "cache_dir", "agent-name": "agent_name",
         "status-file": "status_file", "max-temp-c": "max_temp_c", "thermal-dir": "thermal_dir",
         "throttled-file": "throttled_file", "decline-file": "decline_file"}


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    data_dir: Path = Field(description="the image store's data/ folder (train/ and test/)")
    cache_dir: Path = Field(description="artifacts and embeddings")
    agent_name: str = Field(min_length=1, max_length=63)
    status_file: Optional[Path] = Field(None, description="where the ClientApp writes LastTraining")
    # Pi health (fed_common.pi_health): a train message is declined at or above max_temp_c
    # (None: no limit) or under-voltage now; the paths are the agent's, tests point them elsewhere.
    max_temp_c: Optional[float] = Field(None, ge=0, le=200, description="training.max_temp_c")
    thermal_dir: Optional[Path] = Field(None, description="where thermal_zone*/temp are (/sys/class/thermal)")
    throttled_file: Optional[Path] = Field(None, description="the firmware's sysfs get_throttled file")
    decline_file: Optional[Path] = Field(None, description="where the ClientApp writes the last Decline")

    def to_flwr(self) -> str:
        """The --node-config string: key="value" pairs (values may not contain quotes)."""
        pairs = []
        for key, name in _KEYS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if '"' in str(value):
                raise ValueError(f"node-config {key} must not contain a double quote (got {value!r})")
            pairs.append(f'{key}="{value}"')
        return " ".join(pairs)

    @classmethod
    def from_flwr(cls, mapping: Mapping[str, Any]) -> "NodeConfig":
        """From `context.node_config`; ValueError names the missing or unknown key."""
        unknown = sorted(set(mapping) - set(_KEYS))
        if unknown:
            raise ValueError(f"node-config has unknown key(s): {', '.join(unknown)}")
        missing = [key for key, name in _KEYS.items() if key not in mapping and
                   cls.model_fields[name].is_required()]
        if missing:
            raise ValueError(f"node-config is missing {', '.join(repr(k) for k in missing)}")
        return cls(**{_KEYS[key]: str(value) for key, value in mapping.items()})


class LastTraining(BaseModel):
    """What the node's last training round was, as the heartbeat reports it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    campaign: str = Field("", max_length=128)
    run_id: int = Field(ge=0)
    round: int = Field(ge=0, le=100_000)
    time: float = Field(ge=0)
    examples: int = Field(ge=0)
    train_accuracy: Optional[float] = Field(None, ge=0, le=1)
    local_test_accuracy: Optional[float] = Field(None, ge=0, le=1)
    backbone_sha: str = Field("", max_length=64)

    def write(self, path: str | Path) -> None:
        atomic_write(path, self.model_dump_json())

    @classmethod
    def read(cls, path: str | Path) -> Optional["LastTraining"]:
        """The record, or None when there is none yet or it cannot be read."""
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None

    @classmethod
    def now(cls, **fields: Any) -> "LastTraining":
        return cls(time=time.time(), **fields)
