"""The agent's config file: the sample loads as printed, and every kind of mistake is
reported as one borgmatic-style line naming the exact key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fed_agent.config import AgentConfig, ConfigError, default_config_yaml, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def sample() -> dict:
    return yaml.safe_load(default_config_yaml())


def errors_for(tmp_path: Path, mutate) -> list[str]:
    """Apply `mutate` to the sample, load it, and return the error lines."""
    data = sample()
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump(data)))
    lines = str(caught.value).splitlines()
    assert lines == caught.value.errors
    return lines


def test_default_sample_loads_as_printed(tmp_path):
    cfg = load_config(write(tmp_path, default_config_yaml()))
    assert cfg.agent.name == "pi-cam-01"
    assert cfg.coordinator.superlink == "coordinator.example.org:9092"
    assert cfg.coordinator.root_certificates == Path("/etc/fed-agent/ca.pem")
    assert cfg.labels == ["head", "hardhat"]
    # the sections with defaults show exactly the schema's defaults
    for section in ("supernode", "heartbeat", "inbox", "logging"):
        assert getattr(cfg, section) == type(getattr(cfg, section))()
    assert cfg.inbox_dir == Path("/var/lib/fed-agent/inbox")
    assert cfg.data_dir == Path("/var/lib/fed-agent/data")
    assert cfg.quarantine_dir == Path("/var/lib/fed-agent/quarantine")
    assert cfg.cache_dir == Path("/var/lib/fed-agent/cache")


def test_every_key_is_in_the_sample_with_a_comment():
    text = default_config_yaml()
    lines = text.splitlines()
    for section, field in AgentConfig.model_fields.items():
        assert field.description, section
        model = field.annotation
        keys = model.model_fields.items() if isinstance(model, type) and hasattr(model, "model_fields") else []
        for key, sub in keys:
            at = [i for i, line in enumerate(lines) if line.startswith(f"  {key}:")]
            assert at and lines[at[0] - 1].startswith("  # "), f"{section}.{key} undocumented"
            assert sub.description


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c["coordinator"].update(superlink="coordinator.example.org"), "At 'coordinator.superlink': must be"),
    (lambda c: c["coordinator"].update(superlink="host:0"), "At 'coordinator.superlink': port must be"),
    (lambda c: c["coordinator"].update(superlink="http://host:9092"), "At 'coordinator.superlink': must be"),
    (lambda c: c["coordinator"].update(superlink=":9092"), "At 'coordinator.superlink': must be"),
    (lambda c: c["coordinator"].update(superlink="[::zz]:9092"), "At 'coordinator.superlink': not a valid IPv6"),
    (lambda c: c["heartbeat"].update(interval=1), "At 'heartbeat.interval': must be at least 5 (got 1)"),
    (lambda c: c["heartbeat"].update(interval=7200), "At 'heartbeat.interval': must be at most 3600 (got 7200)"),
    (lambda c: c["agent"].pop("name"), "At 'agent.name': required key missing"),
    (lambda c: c["agent"].update(name="Pi_Cam"), "At 'agent.name': must be 1-63 lower-case letters"),
    (lambda c: c["agent"].update(colour="red"), "At 'agent.colour': unknown key"),
    (lambda c: c.update(colour="red"), "At 'colour': unknown key"),
    (lambda c: c.update(labels=["head", "hardhat", "head"]), "At 'labels': must not repeat a label (repeated: head)"),
    (lambda c: c.update(labels=["head"]), "At 'labels': must have at least 2 items (got 1)"),
    (lambda c: c.update(labels=["head", "hard hat"]), "At 'labels[1]': must be letters, digits"),
    (lambda c: c["logging"].update(level="verbose"),
     "At 'logging.level': must be one of debug, info, warning, error (got 'verbose')"),
    (lambda c: c["coordinator"].pop("root_certificates"), "At 'coordinator.root_certificates': required unless"),
    (lambda c: c["supernode"].update(restart_backoff_initial=30, restart_backoff_max=10),
     "At 'supernode.restart_backoff_max': must be at least restart_backoff_initial (30) (got 10)"),
    (lambda c: c["inbox"].update(max_bytes="abc"), "At 'inbox.max_bytes': must be a whole number (got 'abc')"),
    (lambda c: c["inbox"].update(test_fraction="lots"), "At 'inbox.test_fraction': must be a number (got 'lots')"),
    (lambda c: c["coordinator"].update(insecure="maybe"), "At 'coordinator.insecure': must be true or false"),
    (lambda c: c["coordinator"].update(heartbeat_url="coordinator/api"), "At 'coordinator.heartbeat_url': must be"),
    (lambda c: c.update(heartbeat=5), "At 'heartbeat': must be a mapping of keys (got 5)"),
    (lambda c: c["supernode"].update(port=80), "At 'supernode.port': must be at least 1024 (got 80)"),
    (lambda c: c.update(labels=["head", "unlabeled"]), "At 'labels': must not include 'unlabeled'"),
    (lambda c: c["labeling"].update(pseudo_threshold=0), "At 'labeling.pseudo_threshold': must be greater than 0"),
    (lambda c: c["labeling"].update(pseudo_threshold=1.5), "At 'labeling.pseudo_threshold': must be at most 1"),
    (lambda c: c["labeling"].update(max_pseudo_ratio=-1), "At 'labeling.max_pseudo_ratio': must be at least 0"),
    (lambda c: c["labeling"].update(enabled="sometimes"), "At 'labeling.enabled': must be true or false"),
    (lambda c: c["labeling"].update(threshold=0.9), "At 'labeling.threshold': unknown key"),
])
def test_bad_field_names_the_exact_path(tmp_path, mutate, expected):
    lines = errors_for(tmp_path, mutate)
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines[0]


def test_insecure_needs_no_certificate(tmp_path):
    data = sample()
    data["coordinator"].pop("root_certificates")
    data["coordinator"]["insecure"] = True
    assert load_config(write(tmp_path, yaml.safe_dump(data))).coordinator.root_certificates is None


def test_ipv6_superlink_and_upper_case_level_are_fine(tmp_path):
    data = sample()
    data["coordinator"]["superlink"] = "[fd00::1]:9092"
    data["logging"]["level"] = "DEBUG"
    cfg = load_config(write(tmp_path, yaml.safe_dump(data)))
    assert cfg.coordinator.superlink == "[fd00::1]:9092" and cfg.logging.level == "debug"


def test_several_errors_give_several_lines(tmp_path):
    def mutate(c):
        c["agent"].pop("name")
        c["heartbeat"]["interval"] = 1
        c["logging"]["colour"] = "red"
    lines = errors_for(tmp_path, mutate)
    assert lines == [
        "At 'agent.name': required key missing",
        "At 'heartbeat.interval': must be at least 5 (got 1)",
        "At 'logging.colour': unknown key",
    ]


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "agent:\n  name: pi\ncoordinator:\n  superlink: [a, b\n  insecure: true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and "YAML syntax error at line " in message


def test_yaml_syntax_error_line_number(tmp_path):
    path = write(tmp_path, "agent:\n  name: pi\n   bad: indent\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml: YAML syntax error at line 3, "):
        load_config(path)


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, default_config_yaml() + "\nlabels: [a, b]\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'labels'"):
        load_config(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"config file not found: {path}"


@pytest.mark.parametrize("text,kind", [("- agent\n- coordinator\n", "a list"), ("", "empty"), ("42\n", "a number"), ("just words\n", "plain text")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "mapping" in str(caught.value) and kind in str(caught.value)
