"""The typed run configuration: one set of defaults, one set of bounds, one key spelling.

`RunSettings` holds what an operator may tune per campaign; the coordinator's `campaign:`
config section is built on it (so a misspelled or out-of-range setting fails at config
validation, exit 78, not in the ServerApp on the server at 2 a.m.). `RunConfig` adds the
per-run paths and is what travels: `to_flwr()` gives the `run_config` mapping `flwr run`
submits, `from_context()` reads it back in the ServerApp. `TrainConfig` is what the
ServerApp sends each node every round (a ConfigRecord), read back with `from_record()`.
`[tool.flwr.app.config]` in pyproject.toml must equal `RunConfig().to_flwr()` (tested).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

from fed_common.config import unique_labels
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
Label = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$")]
_FLWR_NAMES = {"rounds": "num-server-rounds"}  # field -> run_config key where not kebab-case
# Why a weight in the loss (and 0.5), not sampling: benchmarks/pseudo_label_weight.py replays
# campaigns on the shared photos (3-15% human labels, pseudo labels from campaign 1's model):
# weighting matched or beat sampling at the same expected share in every setting measured,
# and 0.5 kept the accuracy gain of 1.0 with a lower held-out log loss (a model trained on its
# own answers at full weight grows over-sure); the figures are in the benchmark's docstring.
PSEUDO_LABEL_WEIGHT = 0.5
# Early stopping defaults (fedapp.early_stop), from `make demo` on the shared photos: see the
# measured server losses per round in benchmarks/README.md ("Early stopping").
EARLY_STOP_PATIENCE = 2
EARLY_STOP_MIN_DELTA = 0.01
EARLY_STOP_MIN_ROUNDS = 2


def _kebab(name: str) -> str:
    return _FLWR_NAMES.get(name, name.replace("_", "-"))


def _from_kebab(mapping: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    names = {_kebab(name): name for name in model.model_fields}
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise ValueError(f"unknown run config key(s): {', '.join(unknown)}")
    values = {names[key]: value for key, value in mapping.items()}
    if isinstance(values.get("labels"), str):
        values["labels"] = values["labels"].split(",")
    return values


def _to_kebab(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        out[_kebab(name)] = ",".join(value) if isinstance(value, list) else value
    return out


class RunSettings(BaseModel):
    """What a campaign does; every default lives here and only here."""

    model_config = _STRICT
    labels: list[Label] = Field(["head", "hardhat"], min_length=2, description="class labels, output order")
    rounds: int = Field(6, ge=1, le=1000, description="federated rounds per campaign at most "
                        "(early stopping may end it sooner)")
    local_epochs: int = Field(20, ge=1, le=1000, description="local epochs per round")
    batch_size: int = Field(8, ge=1, le=4096, description="local batch size")
    learning_rate: float = Field(0.01, gt=0, le=10, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    seed: int = Field(0, ge=0, description="seed of the server-side head initialisation")
    min_nodes: int = Field(2, ge=1, description="agents wanted per round")
    min_completed_nodes: int = Field(1, ge=1, description="agents that must finish a round")
    node_wait_seconds: float = Field(120.0, ge=1, description="how long a round waits for agents")
    round_timeout_seconds: float = Field(600.0, ge=5, description="a round ends at this deadline")
    aggregation: Literal["fedavg", "trimmed_mean", "median"] = Field(
        "fedavg", description="fedavg (weighted by examples), or trimmed_mean / median "
        "(coordinate-wise, unweighted: robust to a poisoned node once 3 or more agents reply)")
    trim_fraction: float = Field(0.2, ge=0, lt=0.5, description="trimmed_mean: share cut from "
                                 "each end (at least one reply each end from 3 replies on)")
    max_examples_per_node: int = Field(100_000, ge=1, description="a reply claiming more training "
                                       "examples than this is rejected (it would dictate FedAvg)")
    use_pseudo_labels: bool = Field(False, description="agents also train on their pseudo labels "
                                    "(train side only, whichever model version made them)")
    pseudo_label_weight: float = Field(PSEUDO_LABEL_WEIGHT, gt=0, le=1, description="a pseudo label's "
                                       "loss weight (0-1]; FedAvg counts it as this share of an example")

    early_stop_patience: int = Field(EARLY_STOP_PATIENCE, ge=0, le=1000, description="stop when the server "
                                     "loss has not improved by early_stop_min_delta for this many rounds (0: off)")
    early_stop_min_delta: float = Field(EARLY_STOP_MIN_DELTA, ge=0, le=10, description="the server log-loss "
                                        "gain that counts as an improvement")
    early_stop_min_rounds: int = Field(EARLY_STOP_MIN_ROUNDS, ge=1, le=1000, description="never stop "
                                       "before this round")
    nodes_per_round: int = Field(0, ge=0, le=100_000, description="agents trained per round: a seeded "
                                 "random sample preferring agents not yet used in the campaign (0: all)")

    _unique_labels = field_validator("labels")(unique_labels)

    @model_validator(mode="after")
    def _sample_fits(self) -> "RunSettings":
        if self.nodes_per_round and self.min_completed_nodes > self.nodes_per_round:
            raise ValueError(f"min_completed_nodes ({self.min_completed_nodes}) is more than "
                             f"nodes_per_round ({self.nodes_per_round}): no round could ever complete")
        return self

    def run_settings(self) -> "RunSettings":
        """Just the RunSettings part of a subclass (the coordinator's campaign section)."""
        return RunSettings(**{name: getattr(self, name) for name in RunSettings.model_fields})


class RunConfig(RunSettings):
    """RunSettings plus this run's absolute paths on the coordinator host."""

    artifacts_dir: str = Field("", description="backbone.tflite and trainer.tflite")
    server_test_dir: str = Field("", description="server evaluation photos, <label>/ folders")
    output_dir: str = Field("", description="progress.jsonl and head_final.npz go here")

    def to_flwr(self) -> dict[str, Any]:
        return _to_kebab(self)

    @classmethod
    def from_flwr(cls, mapping: Mapping[str, Any]) -> "RunConfig":
        return cls(**_from_kebab(mapping, cls))

    @classmethod
    def from_context(cls, context: Any) -> "RunConfig":
        return cls.from_flwr(dict(context.run_config))


class TrainConfig(BaseModel):
    """What each node is told every round (its ConfigRecord)."""

    model_config = _STRICT
    labels: list[Label] = Field(min_length=2)
    local_epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=4096)
    learning_rate: float = Field(gt=0, le=10)
    momentum: float = Field(ge=0, lt=1)
    seed: int = Field(ge=0)
    campaign: str = Field(max_length=128)
    backbone_sha: str = Field(pattern=r"^[0-9a-f]{64}$")
    trainer_sha: str = Field(pattern=r"^[0-9a-f]{64}$")
    server_round: int = Field(0, ge=0)
    use_pseudo_labels: bool = False
    pseudo_label_weight: float = Field(PSEUDO_LABEL_WEIGHT, gt=0, le=1)

    def to_record(self) -> dict[str, Any]:
        return _to_kebab(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "TrainConfig":
        return cls(**_from_kebab(dict(record), cls))
