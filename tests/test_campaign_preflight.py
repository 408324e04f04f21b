"""A campaign that cannot work fails at start with a message naming the problem."""

from pathlib import Path

import pytest

from fed_coordinator.campaign import CampaignRunner, CampaignSettings
from fed_coordinator.flower import FlwrCli
from fed_coordinator.logs import get_logger
from fed_coordinator.registry import ModelRegistry


def runner(tmp_path) -> CampaignRunner:
    # Port 9 (discard) has no SuperLink: preflight must fail before any Flower call.
    cli = FlwrCli(tmp_path / "cli", "127.0.0.1:9")
    return CampaignRunner(tmp_path / "state", cli, ModelRegistry(tmp_path / "models"), get_logger())


def make_server_dir(root: Path, labels) -> Path:
    for label in labels:
        (root / "test" / label).mkdir(parents=True)
    return root


def test_missing_server_test_folder(tmp_path):
    outcome = runner(tmp_path).run(CampaignSettings(server_data_dir=tmp_path / "nowhere"))
    assert outcome.status == "failed"
    assert outcome.reason == f"server test folder not found: {tmp_path / 'nowhere' / 'test'}"
    assert outcome.run_id is None


def test_labels_not_matching_folders(tmp_path):
    server = make_server_dir(tmp_path / "server", ["head", "helmet"])
    outcome = runner(tmp_path).run(CampaignSettings(server_data_dir=server))
    assert outcome.status == "failed"
    assert "labels ['head', 'hardhat'] do not match the folders" in outcome.reason
    assert "missing ['hardhat']" in outcome.reason and "unexpected ['helmet']" in outcome.reason


def test_missing_weights_file(tmp_path):
    server = make_server_dir(tmp_path / "server", ["head", "hardhat"])
    outcome = runner(tmp_path).run(CampaignSettings(server_data_dir=server, weights="/no/such.h5"))
    assert outcome.reason == "backbone weights file not found: /no/such.h5"


@pytest.mark.parametrize("labels", [["head"], ["head", "head"]])
def test_degenerate_labels(tmp_path, labels):
    server = make_server_dir(tmp_path / "server", ["head"])
    outcome = runner(tmp_path).run(CampaignSettings(server_data_dir=server, labels=labels))
    assert "labels must be at least two distinct names" in outcome.reason
