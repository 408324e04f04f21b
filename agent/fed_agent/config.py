"""The agent's YAML configuration, checked against one pydantic schema.

Why strict: a Pi in the field is configured by hand over SSH, so a typo ("intervall",
"insecure: ture") must stop the daemon at start-up with a message naming the key rather
than silently running on a default. Unknown keys are errors, and each validation error is
one borgmatic-style line: ``At 'heartbeat.interval': must be at least 5 (got 1)``. The
commented sample (`default_config_yaml`) is generated from these models, so it cannot drift.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, ValidationInfo
from pydantic import field_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
LABEL_PATTERN = r"^[A-Za-z0-9_-]+$"
_PATTERN_HINTS = {  # what each pattern means, for people who do not read regular expressions
    NAME_PATTERN: "must be 1-63 lower-case letters, digits or '-', not starting with '-'",
    LABEL_PATTERN: "must be letters, digits, '_' or '-' only",
}
# host:port or [IPv6]:port; the IPv6 address and the port range are checked in code.
M = TypeVar("M", bound=BaseModel)
_HOST_PORT = re.compile(r"^(?:\[(?P<ipv6>[^\]]*)\]|(?P<host>[^\s:/\[\]]+)):(?P<port>[0-9]{1,5})$")


class ConfigError(Exception):
    """An unusable config file: str() is the message for a person; ``errors`` holds the
    ``At '...'`` lines (empty for e.g. a YAML syntax error) and ``path`` the file."""

    def __init__(self, message: str, path: Path | None = None, errors: list[str] | None = None):
        super().__init__(message)
        self.path = path
        self.errors = list(errors or [])


def _non_empty_path(value: Path | None) -> Path | None:
    # Path("") silently means "the current directory"; never what a person meant.
    if value is not None and str(value) in ("", "."):
        raise ValueError("must not be empty")
    return value


class AgentSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] = Field(
        description="This Pi's name in the fleet (host-name style). Required.", examples=["pi-cam-01"])
    state_dir: Path = Field(Path("/var/lib/fed-agent"), description="Holds inbox/, data/, quarantine/, cache/.")
    _check_state_dir = field_validator("state_dir")(_non_empty_path)


class CoordinatorSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
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
        match = _HOST_PORT.match(value)
        if not match:
            raise ValueError(f"must be 'host:port' or '[IPv6 address]:port', no scheme or path (got {value!r})")
        if match["ipv6"] is not None:
            try:
                ipaddress.IPv6Address(match["ipv6"])
            except ValueError:
                raise ValueError(f"not a valid IPv6 address in [...] (got {value!r})") from None
        if not 1 <= int(match["port"]) <= 65535:
            raise ValueError(f"port must be from 1 to 65535 (got {value!r})")
        return value

    @field_validator("root_certificates")
    def _check_root_certificates(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # If 'insecure' itself was invalid it is missing from info.data and reported on its own.
        if value is None and info.data.get("insecure") is False:
            raise ValueError("required unless 'insecure: true' (TLS to the SuperLink needs a CA certificate)")
        return _non_empty_path(value)

    @field_validator("heartbeat_url")
    def _check_heartbeat_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
        return value


class SupernodeSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
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
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    interval: float = Field(60.0, ge=5, le=3600, description="Seconds between heartbeats (5-3600).")
    timeout: float = Field(10.0, ge=1, le=120, description="Seconds to wait for the coordinator (1-120).")
    token_file: Path = Field(Path("/etc/fed-agent/token"), description="File holding this agent's bearer token.")
    _check_token_file = field_validator("token_file")(_non_empty_path)


class InboxSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scan_interval: float = Field(10.0, ge=1, le=3600, description="Seconds between inbox scans (1-3600).")
    min_width: int = Field(64, ge=16, description="Narrower images are quarantined (pixels, >= 16).")
    min_height: int = Field(64, ge=16, description="Lower images are quarantined (pixels, >= 16).")
    max_bytes: int = Field(20_000_000, ge=1024, description="Larger files are quarantined unread (bytes).")
    test_fraction: float = Field(0.2, ge=0, le=0.9, description="Share of images kept for testing (0-0.9).")
    settle_seconds: float = Field(2.0, ge=0, description="Files changed more recently wait for the next scan.")


class LoggingSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="debug, info, warning or error.")

    @field_validator("level", mode="before")
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]


class AgentConfig(BaseModel):
    """The whole file. ``agent`` and ``coordinator`` have required keys; the rest default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    agent: AgentSection = Field(description="This device.")
    coordinator: CoordinatorSection = Field(description="Where the fleet is run from.")
    supernode: SupernodeSection = Field(default_factory=SupernodeSection, description="The supervised SuperNode.")
    heartbeat: HeartbeatSection = Field(default_factory=HeartbeatSection, description="Status reports.")
    inbox: InboxSection = Field(default_factory=InboxSection, description="Photos dropped in <state_dir>/inbox/.")
    labels: list[Label] = Field(default_factory=lambda: ["head", "hardhat"], min_length=2,
                                description="Class names (2 or more, unique); one inbox folder each.")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Log output.")

    @field_validator("labels")
    def _unique_labels(cls, value: list[str]) -> list[str]:
        duplicates = sorted({label for label in value if value.count(label) > 1})
        if duplicates:
            raise ValueError(f"must not repeat a label (repeated: {', '.join(duplicates)})")
        return value

    @property
    def inbox_dir(self) -> Path:
        return self.agent.state_dir / "inbox"

    @property
    def data_dir(self) -> Path:
        return self.agent.state_dir / "data"

    @property
    def quarantine_dir(self) -> Path:
        return self.agent.state_dir / "quarantine"

    @property
    def cache_dir(self) -> Path:
        return self.agent.state_dir / "cache"


def _yaml(value: Any) -> str:
    """A value as YAML writes it inline: [head, hardhat], 60.0, null, /var/lib/fed-agent."""
    value = str(value) if isinstance(value, Path) else value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("...\n").strip()


def _show(value: Any) -> str:
    """A bad value for '(got ...)': strings quoted, so '' and ' 5' are visible; kept short."""
    text = repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else _yaml(value)
    return text if len(text) <= 60 else text[:57] + "..."


_BOUNDS = {"greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt"),
           "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
_SIMPLE = {kind: text for text, kinds in {  # pydantic error types -> message; "(got ...)" is added
    "must be a whole number": "int_parsing int_type int_from_float", "must be a number": "float_parsing float_type",
    "must be a finite number": "finite_number", "must be true or false": "bool_parsing bool_type",
    "must be a string": "string_type", "must be a list": "list_type", "must be a file path": "path_type",
    "must be a mapping of keys": "model_type model_attributes_type dict_type",
}.items() for kind in kinds.split()}
_FIXED = {"missing": "required key missing", "extra_forbidden": "unknown key"}


def _human(err: dict[str, Any]) -> str:
    """Translate one pydantic error into a short sentence; fall back to pydantic's own."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, _show(err.get("input"))
    if kind in _FIXED:
        return _FIXED[kind]
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"must be {words} {_show(ctx.get(key))} (got {got})"
    if kind in _SIMPLE:
        return f"{_SIMPLE[kind]} (got {got})"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"{_PATTERN_HINTS.get(pattern, 'must match ' + pattern)} (got {got})"
    if kind == "literal_error":
        options = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {options} (got {got})"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} items (got {ctx.get('actual_length')})"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(err.get("msg", kind))


def format_validation_error(exc: ValidationError) -> list[str]:
    """One borgmatic-style line per error: ``At 'labels[2]': <what is wrong>``."""
    lines = []
    for err in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).removeprefix(".")
        lines.append(f"At '{where}': {_human(err)}")
    return lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: list[Any] = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{where}: {exc.problem or exc.context}", path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}", path) from None


def load_config(path: str | Path) -> AgentConfig:
    """Read, parse and validate the agent's config file; every failure is a ConfigError."""
    return load_model(path, AgentConfig)


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file and validate it against `model` (shared with the coordinator)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", path) from None
    data = _parse_yaml(path, text)
    if not isinstance(data, dict):
        kinds = {type(None): "empty", list: "a list", str: "plain text", int: "a number", float: "a number"}
        kind = kinds.get(type(data), f"a {type(data).__name__}")
        sections = ", ".join(f"{name}:" for name in list(model.model_fields)[:2])
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({sections} ...)"
                          f" but the file is {kind}", path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_error(exc)
        raise ConfigError("\n".join(lines), path, lines) from None  # callers add the file name


def default_config_yaml() -> str:
    """A commented sample config that loads as-is: every key with its description and
    default, or (required keys, root_certificates) a working example value to replace."""
    return sample_yaml(AgentConfig, "fed-agent")


def sample_yaml(root: type[BaseModel], program: str) -> str:
    """The commented sample of any sectioned config model (shared with the coordinator)."""
    out = [f"# {program} configuration (YAML). Unknown keys are errors.", ""]
    for section, sfield in root.model_fields.items():
        out.append(f"# {sfield.description}")
        model = sfield.annotation
        if get_origin(model) is not None or not (isinstance(model, type) and issubclass(model, BaseModel)):
            out += [f"{section}: {_yaml(sfield.get_default(call_default_factory=True))}", ""]
            continue
        out.append(f"{section}:")
        for key, field in model.model_fields.items():
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            value = field.examples[0] if field.examples else default
            note = "" if field.is_required() or value == default else f" (default: {_yaml(default)})"
            out.append(f"  # {field.description}{note}")
            out.append(f"  {key}: {_yaml(value)}")
        out.append("")
    return "\n".join(out)


EX_CONFIG = 78  # sysexits.h: the unit's RestartPreventExitStatus keeps systemd from retrying


def config_command(prog: str, path: str, command: str, load, sample) -> tuple[Any, int | None]:
    """The config side of both daemons' command lines (shared so they behave alike).

    Returns (config, None) when the daemon should run, or (None, exit status) when the
    command is done: `print-default-config`, `validate-config`, or a bad config (78).
    """
    import sys

    if command == "print-default-config":
        sys.stdout.write(sample())
        return None, 0
    try:
        cfg = load(path)
    except ConfigError as exc:
        where = f" in {path}:\n" if exc.errors else ": "
        print(f"{prog}: invalid configuration{where}{exc}", file=sys.stderr)
        return None, EX_CONFIG
    if command == "validate-config":
        print(f"{path}: valid")
        return None, 0
    return cfg, None
