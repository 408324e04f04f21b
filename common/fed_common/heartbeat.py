"""The heartbeat: what an agent tells the coordinator every minute, as one versioned model.

The agent builds a `Heartbeat`; the coordinator's API validates the raw body against it
(`Heartbeat.model_validate_json`) before anything is stored, and every reader (fedctl, the
status page, /metrics, the scheduler) gets it back as a `Heartbeat`, never as a dict. Types,
bounds, string lengths and finite numbers are checked, so nothing an agent sends can make a
reader raise later. A change of shape is a new `schema_version`; the coordinator answers an
unknown one with 422 naming `schema_version`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .clock import ClockStatus
from .config import LABEL_PATTERN, NAME_PATTERN
from .node_config import LastTraining
from .pi_health import PiHealth

SCHEMA_VERSION = 1
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)
AgentName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
LabelName = Annotated[str, StringConstraints(pattern=LABEL_PATTERN, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=64)]
Count = Annotated[int, Field(ge=0, le=10**12)]
Bytes = Annotated[int, Field(ge=0, le=2**63 - 1)]
Share = Annotated[float, Field(ge=0, le=1)]
ConnectionState = Literal["starting", "restarting", "reconnecting", "connecting", "connected"]


class SupernodeStatus(BaseModel):
    model_config = _STRICT
    state: ConnectionState
    node_id: Optional[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,24}$")]] = None
    restarts: Count = 0
    last_exit: Optional[Annotated[str, StringConstraints(max_length=300)]] = None


class LabelCounts(BaseModel):
    model_config = _STRICT
    train: Count = 0
    test: Count = 0

    @property
    def total(self) -> int:
        return self.train + self.test


class ImageCounts(BaseModel):
    """The agent's stored images: `labels` the human-labeled ones per label and split; the
    images without a human label (data/unlabeled/) by status; files quarantined and waiting
    in the inbox. Every count defaults to 0, so a heartbeat of an agent without unlabeled
    images (or from before they existed) is valid as it is."""

    model_config = _STRICT
    labels: Annotated[dict[LabelName, LabelCounts], Field(max_length=64)] = Field(default_factory=dict)
    quarantined: Count = 0
    pending: Count = 0
    pseudo: Count = 0  # pseudo-labeled by the running model (training data only as pseudo labels)
    review: Count = 0  # waiting for a person (the model was not sure, or its class is at its cap)
    unlabeled: Count = 0  # not classified yet (no model runs, or after a rollback)

    @property
    def total(self) -> int:
        """The human-labeled images."""
        return sum(counts.total for counts in self.labels.values())

    @property
    def without_label(self) -> int:
        return self.pseudo + self.review + self.unlabeled


class Memory(BaseModel):
    model_config = _STRICT
    total_bytes: Optional[Bytes] = None
    available_bytes: Optional[Bytes] = None


class RunningModel(BaseModel):
    """The model the agent runs (the rollout's view of this Pi)."""

    model_config = _STRICT
    version: Optional[Annotated[int, Field(ge=1)]] = None
    sha256: Optional[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]] = None
    state: Literal["none", "ok", "updating", "failed"] = "none"
    reason: Optional[Annotated[str, StringConstraints(max_length=300)]] = None  # why it failed
    desired_version: Optional[Annotated[int, Field(ge=1)]] = None
    # The self-test the running model passed: accuracy on this Pi's own labeled test images
    # (None with none: a smoke inference only), and how many images that was.
    self_test_accuracy: Optional[Share] = None
    self_test_images: Count = 0


class FieldSummary(BaseModel):
    """What the running model saw in the field since the last heartbeat the coordinator took:
    every image the inbox accepted, classified on the Pi."""

    model_config = _STRICT
    model_version: Optional[Annotated[int, Field(ge=1)]] = None
    images: Count = 0
    predicted: Annotated[dict[LabelName, Count], Field(max_length=64)] = Field(default_factory=dict)
    mean_confidence: Optional[Share] = None
    low_confidence: Share = 0.6  # the threshold (inference.low_confidence) the share is counted at
    low_confidence_images: Count = 0
    labeled: Count = 0  # images with a human label (their inbox folder)
    correct: Count = 0  # ... of which the model agreed with the human

    @model_validator(mode="after")
    def _consistent(self) -> "FieldSummary":
        # Readers divide by these counts; a summary that cannot be true is refused whole.
        if self.low_confidence_images > self.images or self.labeled > self.images or self.correct > self.labeled:
            raise ValueError("counts do not add up (low_confidence_images and labeled are at most images, "
                             "correct at most labeled)")
        if sum(self.predicted.values()) != self.images:
            raise ValueError(f"predicted counts sum to {sum(self.predicted.values())}, images is {self.images}")
        return self

    @property
    def low_confidence_share(self) -> Optional[float]:
        return self.low_confidence_images / self.images if self.images else None

    @property
    def field_accuracy(self) -> Optional[float]:
        return self.correct / self.labeled if self.labeled else None


class CameraStatus(BaseModel):
    """The agent's camera capture (None in the heartbeat when capture is off)."""

    model_config = _STRICT
    state: Literal["ok", "failing"]
    failing_since: Optional[Annotated[float, Field(ge=0, le=10**11)]] = None  # time.time()
    last_error: Optional[Annotated[str, StringConstraints(max_length=300)]] = None
    frames_today: Count = 0
    last_frame_at: Optional[Annotated[float, Field(ge=0, le=10**11)]] = None


class Heartbeat(BaseModel):
    model_config = _STRICT
    schema_version: Literal[1] = SCHEMA_VERSION
    agent: AgentName
    version: ShortText
    uptime_seconds: Annotated[float, Field(ge=0, le=10**10)]
    supernode: SupernodeStatus
    last_training: Optional[LastTraining] = None
    model_version: Optional[ShortText] = None
    images: ImageCounts = Field(default_factory=ImageCounts)
    disk_free_bytes: Optional[Bytes] = None
    disk_full: bool = False  # the inbox stopped filing images for want of space
    store_error: Optional[Annotated[str, StringConstraints(max_length=300)]] = None
    running_model: Optional[RunningModel] = None
    field: Optional[FieldSummary] = None
    camera: Optional[CameraStatus] = None
    memory: Memory = Field(default_factory=Memory)
    load: Annotated[list[Annotated[float, Field(ge=0, le=10**6)]], Field(max_length=3)] = Field(
        default_factory=list)
    cpu_temperature_c: Optional[Annotated[float, Field(ge=-100, le=200)]] = None
    agent_rss_bytes: Optional[Bytes] = None
    clock: Optional[ClockStatus] = None  # synchronised?, offset against the coordinator (fed_common.clock)
    pi_health: Optional[PiHealth] = None  # firmware throttling bits, training limit, last decline

    @classmethod
    def from_stored(cls, text: str | bytes | None) -> Optional["Heartbeat"]:
        """A stored payload back as a model; None for none, or for one stored before this
        schema (a reader must never raise on what is in the database)."""
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except (ValidationError, ValueError):
            return None
