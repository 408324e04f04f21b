"""Config machinery both daemons share: strict YAML load, path-addressed errors, samples.

Why strict: a Pi in the field is configured by hand over SSH, so a typo ("intervall",
"insecure: ture") must stop the daemon at start-up with a message naming the key rather
than silently running on a default. Unknown keys are errors, and each validation error is
one borgmatic-style line: ``At 'heartbeat.interval': must be at least 5 (got 1)``. The same
wording answers a bad heartbeat at the API (`format_validation_error`). The commented
sample of a config (`sample_yaml`) is generated from its models, so it cannot drift.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)  # every section of every config


def non_empty_path(value: Path | None) -> Path | None:
    # Path("") silently means "the current directory"; never what a person meant.
    if value is not None and str(value) in ("", "."):
        raise ValueError("must not be empty")
    return value


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


def unique_labels(labels: list[str]) -> list[str]:
    """A labels-list validator: each class name once (the model's outputs are by position)."""
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"must not repeat a label (repeated: {', '.join(repeated)})")
    return labels


class LoggingSection(BaseModel):
    """Every daemon's `logging:` section."""

    model_config = STRICT
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="debug, info, warning or error.")

    @field_validator("level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


def check_host_port(value: str) -> str:
    """'host:port' or '[IPv6]:port' with a port from 1 to 65535; ValueError says what is wrong."""
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


def format_validation_error(exc: ValidationError) -> list[str]:
    """One borgmatic-style line per error: ``At 'labels[2]': <what is wrong>``."""
    lines = []
    for err in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).removeprefix(".")
        where = where or "(top level)"
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


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file and validate it against `model`; every failure is a ConfigError."""
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


def sample_yaml(root: type[BaseModel], program: str) -> str:
    """A commented sample that loads as-is: every key with its description and default, or
    (required keys) a working example value to replace."""
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
    """The config side of every daemon's command line (shared so they behave alike).

    Returns (config, None) when the daemon should run, or (None, exit status) when the
    command is done: `print-default-config`, `validate-config`, or a bad config (78).
    """
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


def daemon_command_line(prog: str, description: str, env_var: str, default_path: str, load, sample,
                        argv: list[str] | None = None) -> tuple[Any, int | None]:
    """`PROG [-c FILE] [run|validate-config|print-default-config]`, the same for every daemon.

    The config file defaults to $ENV_VAR, else `default_path`. Returns what
    `config_command` returns: (config, None) to run, or (None, exit status) when done.
    """
    default = os.environ.get(env_var, default_path)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-c", "--config", default=default,
                        help=f"config file (default {default}, env {env_var})")
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "validate-config", "print-default-config"])
    args = parser.parse_args(argv)
    return config_command(prog, args.config, args.command, load, sample)
