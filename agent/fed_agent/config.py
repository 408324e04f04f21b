"""The agent's YAML configuration: one pydantic schema (the machinery is fed_common.config).

Why strict: a Pi in the field is configured by hand over SSH, so a typo must stop the daemon
at start-up with a message naming the key (``At 'heartbeat.interval': must be at least 5
(got 1)``) rather than run on a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlsplit

from fed_common.config import (LABEL_PATTERN, NAME_PATTERN, STRICT, ConfigError, LoggingSection, check_host_port,
                               load_model, non_empty_path, sample_yaml, unique_labels)
from fed_common.pi_health import DEFAULT_MAX_TEMP_C, THERMAL_DIR, THROTTLED_FILE
from fed_common.store import UNLABELED, StoreLayout
from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator

from .capture_config import CaptureSection
from .clock import ClockSection
from .review_auth import binding_problem, check_listen_host

__all__ = ["AgentConfig", "CaptureSection", "ConfigError", "load_config", "default_config_yaml"]


class AgentSection(BaseModel):
    model_config = STRICT
    name: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] = Field(
        description="This Pi's name in the fleet (host-name style). Required.", examples=["pi-cam-01"])
    state_dir: Path = Field(Path("/var/lib/fed-agent"), description="Holds inbox/, data/, quarantine/, cache/.")
    _check_state_dir = field_validator("state_dir")(non_empty_path)


class CoordinatorSection(BaseModel):
    model_config = STRICT
    superlink: str = Field(description="Flower SuperLink as host:port ([IPv6]:port). Required.",
                           examples=["coordinator.example.org:9092"])
    # Declared before root_certificates so that field's validator can see it.
    insecure: bool = Field(False, description="Plain (unencrypted) gRPC to the SuperLink: tests and labs only.")
    root_certificates: Optional[Path] = Field(None, validate_default=True, examples=["/etc/fed-agent/ca.pem"],
                                              description="CA certificate for TLS to the SuperLink. "
                                              "Required unless insecure is true.")
    heartbeat_url: str = Field(description="Coordinator URL the heartbeat is POSTed to. Required.",
                               examples=["https://coordinator.example.org/api/heartbeat"])

    @field_validator("superlink")
    def _check_superlink(cls, value: str) -> str:
        return check_host_port(value)

    @field_validator("root_certificates")
    def _check_root_certificates(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # If 'insecure' itself was invalid it is missing from info.data and reported on its own.
        if value is None and info.data.get("insecure") is False:
            raise ValueError("required unless 'insecure: true' (TLS to the SuperLink needs a CA certificate)")
        return non_empty_path(value)

    @field_validator("heartbeat_url")
    def _check_heartbeat_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
        return value


class SupernodeSection(BaseModel):
    model_config = STRICT
    auth_private_key: Optional[Path] = Field(None, description="Key for SuperNode authentication, if required.")
    port: int = Field(9094, ge=1024, le=65535, description="Local port of the SuperNode's ClientApp runtime API.")
    restart_backoff_initial: float = Field(1.0, ge=0.1, description="Seconds before restarting a crashed SuperNode.")
    restart_backoff_max: float = Field(60.0, ge=1, validate_default=True,
                                       description="The restart delay doubles up to this many seconds.")

    @field_validator("restart_backoff_max")
    def _check_backoff_max(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("restart_backoff_initial")
        if initial is not None and value < initial:
            raise ValueError(f"must be at least restart_backoff_initial ({initial:g}) (got {value:g})")
        return value


class HeartbeatSection(BaseModel):
    model_config = STRICT
    interval: float = Field(60.0, ge=5, le=3600, description="Seconds between heartbeats (5-3600).")
    timeout: float = Field(10.0, ge=1, le=120, description="Seconds to wait for the coordinator (1-120).")
    token_file: Path = Field(Path("/etc/fed-agent/token"), description="File holding this agent's bearer token.")
    _check_token_file = field_validator("token_file")(non_empty_path)


class InboxSection(BaseModel):
    model_config = STRICT
    scan_interval: float = Field(10.0, ge=1, le=3600, description="Seconds between inbox scans (1-3600).")
    min_width: int = Field(64, ge=16, description="Narrower images are quarantined (pixels, >= 16).")
    min_height: int = Field(64, ge=16, description="Lower images are quarantined (pixels, >= 16).")
    max_bytes: int = Field(20_000_000, ge=1024, description="Larger files are quarantined unread (bytes).")
    max_pixels: int = Field(40_000_000, ge=4096, le=40_000_000,
                            description="Images with more pixels (from the header, before decoding) are "
                                        "quarantined; at most 40 MP, the ClientApp's own limit.")
    test_fraction: float = Field(0.2, ge=0, le=0.9, description="Share of images kept for testing (0-0.9).")
    settle_seconds: float = Field(2.0, ge=0, description="Files changed more recently wait for the next scan.")
    index_save_seconds: float = Field(
        300.0, ge=0, le=3600, description="The store's index (rewritten whole on the SD card each time) is "
        "written at most this often (0: after every change); what waits is in memory, written at shutdown, "
        "and found again on disk after a power cut.")


class ModelSection(BaseModel):
    model_config = STRICT
    public_key_file: Optional[Path] = Field(
        None, description="The coordinator's Ed25519 public key (PEM) that signs model manifests; "
        "unset: this agent does not fetch models.")
    download_timeout: float = Field(60.0, ge=1, le=3600, description="Seconds per model download request.")
    self_test_margin: float = Field(
        0.05, ge=0, le=1, description="A new model whose accuracy on this Pi's labeled test images is below "
        "the running model's by more than this is refused (0-1).")


class LabelHook(BaseModel):
    model_config = STRICT
    command: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        min_length=1, description="Program and arguments, run without a shell; {path}, {label} and {score} "
        "are replaced in each argument.", examples=[["/usr/local/bin/site-alert", "{label}", "{path}"]])
    timeout: float = Field(10.0, gt=0, le=300, description="Seconds before the command is killed.")


class InferenceSection(BaseModel):
    model_config = STRICT
    enabled: bool = Field(True, description="Classify every image the inbox accepts with the running model.")
    low_confidence: float = Field(0.6, ge=0, le=1, description="Predictions scoring below this count as "
                                  "low-confidence in the heartbeat's field summary (0-1).")
    predictions_max_bytes: int = Field(5_000_000, ge=4096, description="predictions.jsonl is rotated at this size.")
    predictions_keep: int = Field(3, ge=1, le=100, description="Rotated predictions files kept.")
    on_label: dict[Annotated[str, StringConstraints(pattern=LABEL_PATTERN)], LabelHook] = Field(
        default_factory=dict, description="Per predicted label, a command to run (site alerts).")


class LabelingSection(BaseModel):
    model_config = STRICT
    enabled: bool = Field(True, description="Pseudo-label the images of inbox/unlabeled/ the running model is sure "
                          "of; false: every one goes to the review queue.")
    pseudo_threshold: float = Field(0.9, gt=0, le=1, description="A prediction this confident (0-1] becomes a "
                                    "pseudo label; a less confident one goes to the review queue.")
    max_pseudo_ratio: float = Field(1.0, ge=0, le=100, description="At most this many pseudo labels per human "
                                    "label of the same class (0-100); beyond it an image goes to review, so one "
                                    "common class cannot flood the training set.")


class ReviewSection(BaseModel):
    model_config = STRICT
    host: str = Field("127.0.0.1", description="Address `fed-agent review` listens on. Loopback by default "
                      "(reach it with ssh -L); any other address needs token_file.")
    port: int = Field(8765, ge=1, le=65535, description="Port of the review page.")
    token_file: Optional[Path] = Field(None, validate_default=True,
                                       description="File (0600) holding the page's token; when set, every "
                                       "request needs it. Required unless host is a loopback address.")

    _check_host = field_validator("host")(check_listen_host)

    @field_validator("token_file")
    def _token_off_loopback(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        host = info.data.get("host")  # missing when itself invalid: reported on its own
        problem = binding_problem(host, value) if host is not None else None
        if problem:
            raise ValueError(problem)
        return non_empty_path(value)


Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]


class TrainingSection(BaseModel):
    model_config = STRICT
    max_temp_c: float = Field(DEFAULT_MAX_TEMP_C, ge=40, le=110, description="A train message arriving at or "
                              "above this CPU temperature (°C) is declined; the firmware throttles from 80-85.")


class HealthSection(BaseModel):
    """Where the Pi's health is read; the defaults are a Pi's own files (tests point elsewhere)."""

    model_config = STRICT
    thermal_dir: Path = Field(THERMAL_DIR, description="Folder of thermal_zone*/temp (millidegrees).")
    throttled_file: Path = Field(THROTTLED_FILE, description="Firmware get_throttled file, read when "
                                 "`vcgencmd` is not on PATH.")


def not_the_unlabeled_folder(labels: list[str]) -> list[str]:
    """inbox/unlabeled/ holds images without a label: no class may have that name."""
    if UNLABELED in labels:
        raise ValueError(f"must not include {UNLABELED!r} (inbox/{UNLABELED}/ is for images without a label)")
    return labels


class AgentConfig(BaseModel):
    """The whole file. ``agent`` and ``coordinator`` have required keys; the rest default."""

    model_config = STRICT
    agent: AgentSection = Field(description="This device.")
    coordinator: CoordinatorSection = Field(description="Where the fleet is run from.")
    supernode: SupernodeSection = Field(default_factory=SupernodeSection, description="The supervised SuperNode.")
    heartbeat: HeartbeatSection = Field(default_factory=HeartbeatSection, description="Status reports.")
    inbox: InboxSection = Field(default_factory=InboxSection, description="Photos dropped in <state_dir>/inbox/.")
    model: ModelSection = Field(default_factory=ModelSection, description="The model this Pi runs.")
    inference: InferenceSection = Field(default_factory=InferenceSection,
                                        description="What the running model does with new images.")
    capture: CaptureSection = Field(default_factory=CaptureSection,
                                    description="Camera frames into inbox/unlabeled/ (off by default).")
    labeling: LabelingSection = Field(default_factory=LabelingSection,
                                      description="What becomes of images without a label (inbox/unlabeled/).")
    review: ReviewSection = Field(default_factory=ReviewSection,
                                  description="The review page (`fed-agent review`).")
    training: TrainingSection = Field(default_factory=TrainingSection, description="Train messages.")
    health: HealthSection = Field(default_factory=HealthSection,
                                description="Where Pi health is read (a Pi's own files; tests point elsewhere).")
    clock: ClockSection = Field(default_factory=ClockSection,
                                description="Waiting for a synchronised clock before the SuperNode starts.")
    labels: list[Label] = Field(default_factory=lambda: ["head", "hardhat"], min_length=2,
                                description="Class names (2 or more, unique); one inbox folder each.")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Log output.")

    _unique_labels = field_validator("labels")(unique_labels)
    _not_unlabeled = field_validator("labels")(not_the_unlabeled_folder)

    # The layout is defined once, in fed_common.store, for the daemon and the ClientApp alike.
    @property
    def layout(self) -> StoreLayout:
        return StoreLayout(self.agent.state_dir)

    @property
    def inbox_dir(self) -> Path:
        return self.layout.inbox_dir

    @property
    def data_dir(self) -> Path:
        return self.layout.data_dir

    @property
    def quarantine_dir(self) -> Path:
        return self.layout.quarantine_dir

    @property
    def cache_dir(self) -> Path:
        return self.layout.cache_dir


def load_config(path: str | Path) -> AgentConfig:
    """Read, parse and validate the agent's config file; every failure is a ConfigError."""
    return load_model(path, AgentConfig)


def default_config_yaml() -> str:
    """A commented sample config that loads as-is."""
    return sample_yaml(AgentConfig, "fed-agent")
