"""fed-coordinator's YAML config: one pydantic schema, errors addressed by path, exit 78.

The loading and error wording are shared with the agent (`fed_common.config`), so both
daemons speak the same "At 'section.key': ..." language. The campaign section is built on
fedapp's `RunSettings`: the training settings, their defaults and bounds exist once, and a
misspelled or out-of-range one fails here, at config validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from fed_common.config import NAME_PATTERN, STRICT, ConfigError, LoggingSection, load_model, sample_yaml
from fedapp.run_config import RunSettings
from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

__all__ = ["ConfigError", "CoordinatorConfig", "load_config", "default_config_yaml"]
_STRICT = STRICT


class ServiceSection(BaseModel):
    model_config = _STRICT
    state_dir: Path = Field(Path("/var/lib/fed-coordinator"),
                            description="SQLite state, SuperLink database, model registry")


class SuperLinkSection(BaseModel):
    model_config = _STRICT
    host: str = Field("127.0.0.1", description="bind address; keep loopback and expose only "
                      "/v1/fleet/ through the reverse proxy (the Control API has no auth)")
    port: int = Field(9093, ge=1024, le=65535, description="SuperLink HTTP port")
    ssl_certfile: Optional[Path] = Field(None, description="TLS certificate (none: plain HTTP)")
    ssl_keyfile: Optional[Path] = Field(None, description="TLS private key")
    ssl_ca_certfile: Optional[Path] = Field(None, description="CA certificate")
    enable_supernode_auth: bool = Field(False, description="accept only registered node keys")


class ApiSection(BaseModel):
    model_config = _STRICT
    host: str = Field("127.0.0.1", description="fleet API bind address")
    port: int = Field(8080, ge=1024, le=65535, description="fleet API port")
    max_body_bytes: int = Field(65536, ge=1024, le=10_000_000, description="largest heartbeat accepted")
    online_after_seconds: float = Field(180, ge=10, description="a heartbeat younger than this means online")


class CampaignSection(RunSettings):
    """What each campaign does: fedapp's RunSettings plus where the coordinator finds things."""

    model_config = _STRICT
    server_data_dir: Path = Field(Path("/var/lib/fed-coordinator/server-data"),
                                  description="folder with test/<label>/ photos for server evaluation")
    app_dir: Optional[Path] = Field(None, description="the fedapp Flower App folder (pyproject.toml "
                                    "inside); default: the one next to this package in a checkout")
    weights: str = Field("imagenet", description="backbone weights: imagenet or a .h5 file")
    deadline_seconds: float = Field(3600, ge=10, description="a campaign is stopped at this deadline")


class ScheduleSection(BaseModel):
    model_config = _STRICT
    cron: str = Field("0 2 * * *", description="when campaigns are due (cron, in timezone)")
    timezone: str = Field("UTC", description="IANA time zone of the cron expression")
    random_delay_seconds: float = Field(900, ge=0, description="random delay after each slot")
    min_agents: int = Field(2, ge=1, description="agents online needed to start")
    retry_interval_seconds: float = Field(600, ge=1, description="retry a skipped slot this often")
    retry_window_seconds: float = Field(10800, ge=0, description="give a slot up after this")
    catch_up: bool = Field(True, description="run once for a slot missed while down")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression (got {value!r})")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone (got {value!r})") from None
        return value


class ChampionSection(BaseModel):
    model_config = _STRICT
    margin: float = Field(0.0, ge=0, le=1, description="accuracy a new model must add to the champion's")
    min_accuracy: float = Field(0.6, ge=0, le=1, description="no model below this becomes champion, "
                                "the first one included (it must also beat always answering the "
                                "commonest test label)")


class EdgeImpulseSection(BaseModel):
    model_config = _STRICT
    api_key_file: Path = Field(Path("/etc/fed-coordinator/edge-impulse.key"),
                               description="file holding the API key (mode 0600); absent: no deploys")
    endpoint: Optional[str] = Field(None, description="API endpoint (default: Edge Impulse's)")
    device: str = Field("raspberry-pi-4", description="device to profile for")
    targets: list[str] = Field(["zip"], min_length=1, description="deploy targets, each required: one "
                               "the project does not offer fails the deploy (eim_target listed here "
                               "stays optional)")
    eim_target: Optional[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][\w.+-]*$")]] = Field(
        "runner-linux-aarch64", description="Linux runner also built when the project offers it, kept as "
        "<registry>/vNNNN/edge-impulse/<target>.eim for a site to choose (the Pis run the TFLite model); "
        "not offered or failed: a note, the deploy still succeeds; null or empty: off")
    eim_max_mb: int = Field(512, ge=1, le=8192, description="a larger .eim download is refused (a note)")
    connect_timeout: float = Field(10, gt=0, le=300, description="seconds")
    read_timeout: float = Field(120, gt=0, le=3600, description="seconds")
    job_timeout: float = Field(1800, gt=0, description="seconds a build job may take")
    retry_initial_seconds: float = Field(60, ge=1, description="first retry of a failed deploy")
    retry_max_seconds: float = Field(3600, ge=1, description="longest wait between retries")

    @field_validator("eim_target", mode="before")
    @classmethod
    def _eim_off(cls, value):
        return None if isinstance(value, str) and not value.strip() else value


class RolloutSection(BaseModel):
    """The model channel the Pis pull the champion from (GET /api/v1/model/...)."""

    model_config = _STRICT
    signing_key_file: Optional[Path] = Field(
        None, description="Ed25519 private key (PEM, mode 0600) that signs model manifests; "
        "none: the channel is off and agents keep what they run")
    model_kind: Literal["int8", "float32"] = Field("int8", description="which TFLite file the Pis run")
    canaries: list[Annotated[str, StringConstraints(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, description="agents that get each new champion first; empty: canary_fraction "
        "of the agents reporting, or one agent when that is unset too")
    canary_fraction: Optional[float] = Field(None, gt=0, le=1, description="share of the reporting agents "
                                             "(rounded up) that are canaries when canaries is empty")
    canary_minutes: float = Field(30, ge=0, le=7 * 24 * 60, description="minutes every canary must run the "
                                  "new model with its self-test passed before the rest of the fleet gets it")
    canary_timeout_minutes: float = Field(120, gt=0, le=7 * 24 * 60, description="a canary that has not "
                                          "reported the new model running by then halts the rollout")


class MonitoringSection(BaseModel):
    """The field summaries the agents report (state schema 4): how long they are kept, the
    window fedctl fleet, the status page and /metrics total, and when an agent is drifting."""

    model_config = _STRICT
    field_window_hours: float = Field(24, gt=0, le=24 * 30, description="the field numbers shown per agent "
                                      "are totals of its running model version over this many hours")
    chart_days: float = Field(3, gt=0, le=30, description="the status page charts each agent's "
                              "low-confidence share per hour over this many days")
    history_days: float = Field(30, gt=0, le=3650, description="field summaries older than this are deleted")
    history_max_rows_per_agent: int = Field(20000, ge=100, le=10_000_000, description="at most this many "
                                            "field summaries are kept per agent (the oldest go first)")
    drift_min_images: int = Field(20, ge=1, description="the recent window is the agent's latest summaries "
                                  "of its running version totalling at least this many images; the "
                                  "baseline needs as many, or nothing is flagged")
    baseline_days: float = Field(7, gt=0, le=3650, description="the baseline is the same version's "
                                 "summaries received in this many days before the recent window")
    drift_rise: float = Field(0.2, gt=0, le=1, description="drifting: the recent low-confidence share is at "
                              "least this much above the baseline share, and drift_factor times it")
    drift_factor: float = Field(2.0, ge=1, description="drifting: the recent low-confidence share is at least "
                                "this many times the baseline share, and drift_rise above it")

    @model_validator(mode="after")
    def _baseline_is_kept(self) -> "MonitoringSection":
        if self.baseline_days > self.history_days:
            raise ValueError(f"baseline_days ({self.baseline_days:g}) is longer than history_days "
                             f"({self.history_days:g}): the baseline would be deleted before it is used")
        return self


class CoordinatorConfig(BaseModel):
    model_config = _STRICT
    service: ServiceSection = Field(default_factory=ServiceSection, description="where state lives")
    superlink: SuperLinkSection = Field(default_factory=SuperLinkSection, description="Flower SuperLink child")
    api: ApiSection = Field(default_factory=ApiSection, description="fleet API and status page")
    campaign: CampaignSection = Field(default_factory=CampaignSection, description="what each campaign does")
    schedule: ScheduleSection = Field(default_factory=ScheduleSection, description="when campaigns run")
    champion: ChampionSection = Field(default_factory=ChampionSection, description="model promotion gate")
    edge_impulse: EdgeImpulseSection = Field(default_factory=EdgeImpulseSection, description="deploys")
    rollout: RolloutSection = Field(default_factory=RolloutSection, description="the champion to the Pis")
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection,
                                          description="field summaries per agent and the drift flag")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="structlog JSON")


def load_config(path: str | Path) -> CoordinatorConfig:
    return load_model(path, CoordinatorConfig)


def default_config_yaml() -> str:
    return sample_yaml(CoordinatorConfig, "fed-coordinator")
