"""A campaign that cannot work fails at start with a message naming the problem."""

from pathlib import Path

import pytest

from fed_coordinator.campaigns.runner import CampaignRunner
from fed_coordinator.config import CampaignSection
from fed_coordinator.flower import FlwrCli
from fed_common.logs import get_logger
from fed_coordinator.models.registry import ModelRegistry


def runner(tmp_path) -> CampaignRunner:
    # Port 9 (discard) has no SuperLink: preflight must fail before any Flower call.
    cli = FlwrCli(tmp_path / "cli", "127.0.0.1:9")
    return CampaignRunner(tmp_path / "state", cli, ModelRegistry(tmp_path / "models"), get_logger())


def make_server_dir(root: Path, labels) -> Path:
    for label in labels:
        (root / "test" / label).mkdir(parents=True)
    return root


def test_missing_server_test_folder(tmp_path):
    outcome = runner(tmp_path).run(CampaignSection(server_data_dir=tmp_path / "nowhere"))
    assert outcome.status == "failed"
    assert outcome.reason == f"server test folder not found: {tmp_path / 'nowhere' / 'test'}"
    assert outcome.run_id is None


def test_labels_not_matching_folders(tmp_path):
    server = make_server_dir(tmp_path / "server", ["head", "helmet"])
    outcome = runner(tmp_path).run(CampaignSection(server_data_dir=server))
    assert outcome.status == "failed"
    assert "labels ['head', 'hardhat'] do not match the folders" in outcome.reason
    assert "missing ['hardhat']" in outcome.reason and "unexpected ['helmet']" in outcome.reason


def test_missing_weights_file(tmp_path):
    server = make_server_dir(tmp_path / "server", ["head", "hardhat"])
    outcome = runner(tmp_path).run(CampaignSection(server_data_dir=server, weights="/no/such.h5"))
    assert outcome.reason == "backbone weights file not found: /no/such.h5"


@pytest.mark.parametrize("labels, problem", [
    (["head"], "At 'campaign.labels': must have at least 2 items (got 1)"),
    (["head", "head"], "At 'campaign.labels': must not repeat a label (repeated: head)"),
    (["head", "hard hat"], "At 'campaign.labels[1]': must be letters, digits, '_' or '-' only"),
])
def test_degenerate_labels_fail_at_config_validation(tmp_path, labels, problem):
    """Bad campaign settings stop the service at config validation, not in the ServerApp."""
    import yaml

    from fed_coordinator.config import ConfigError, load_config

    path = tmp_path / "coordinator.yaml"
    path.write_text(yaml.safe_dump({"campaign": {"labels": labels}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(line.startswith(problem) for line in err.value.errors), err.value.errors


@pytest.mark.parametrize("key, value, problem", [
    ("local_epoch", 3, "At 'campaign.local_epoch': unknown key"),
    ("rounds", 0, "At 'campaign.rounds': must be at least 1 (got 0)"),
    ("learning_rate", "fast", "At 'campaign.learning_rate': must be a number (got 'fast')"),
])
def test_misspelled_or_mistyped_campaign_setting_fails_at_config_validation(tmp_path, key, value, problem):
    import yaml

    from fed_coordinator.config import ConfigError, load_config

    path = tmp_path / "coordinator.yaml"
    path.write_text(yaml.safe_dump({"campaign": {key: value}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.errors == [problem]
