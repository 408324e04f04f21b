"""Pi health from the firmware's bits to the words readers show, and declines in a round.

The readings go through a fake `vcgencmd` on PATH printing real bit patterns (and one that
hangs), a sysfs get_throttled file, and a thermal folder; the ServerApp's strategy gets a
declined reply next to a trained one, as Flower hands them over.
"""

from __future__ import annotations

import time

import pytest
from fed_common import pi_health
from fed_common.heartbeat import Heartbeat
from fed_common.node_config import NodeConfig
from fed_common.pi_health import Decline, PiHealth, read_throttled
from flwr.app import ConfigRecord, Message, RecordDict

from fed_coordinator.api.fleet import AgentRow
from fed_coordinator.api.pi_health_view import declined_text, readings
from fedapp.client_app import health_decline
from fedapp.run_config import TrainConfig
from fedapp.strategy import CampaignError, DeadlineFedAvg, RoundLedger
from pi_fakes import SOFT_TEMPERATURE_LIMIT, UNDER_VOLTAGE_AND_THROTTLED, FakeVcgencmd, thermal_dir
from test_pseudo_label_training import OFF, SPECS, _Quiet, reply

NO_SYSFS = "/nonexistent/get_throttled"
BITS = [  # value, words, problems at 82.3 °C with the 80.0 limit
    (UNDER_VOLTAGE_AND_THROTTLED, ["under-voltage now", "throttled now", "under-voltage since boot",
                                   "throttled since boot"],
     ["UNDER-VOLTAGE now, THROTTLED now (throttled=0x50005)", "82.3 °C >= training.max_temp_c 80.0"]),
    (0x0, [], ["82.3 °C >= training.max_temp_c 80.0"]),
    (SOFT_TEMPERATURE_LIMIT, ["soft temperature limit now", "soft temperature limit since boot"],
     ["SOFT TEMPERATURE LIMIT now (throttled=0x80008)", "82.3 °C >= training.max_temp_c 80.0"]),
    (0x10000, ["under-voltage since boot"],
     ["under-voltage since boot (throttled=0x10000)", "82.3 °C >= training.max_temp_c 80.0"]),
]


@pytest.mark.parametrize("value, words, problems", BITS, ids=[hex(b[0]) for b in BITS])
def test_the_fake_vcgencmds_bits_in_words(tmp_path, monkeypatch, value, words, problems):
    fake = FakeVcgencmd(tmp_path, value)
    monkeypatch.setenv("PATH", fake.path_env())
    health = read_throttled(NO_SYSFS).model_copy(update={"max_temp_c": 80.0})
    assert (health.throttled, health.source, health.error) == (value, "vcgencmd", None)
    assert health.words == words
    assert health.problems(82.3) == problems
    assert health.problems(79.9) == problems[:-1]  # below the limit the temperature is no problem
    assert health.under_voltage_now == (value & 1 == 1)


def test_the_sysfs_file_when_vcgencmd_is_not_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    sysfs = tmp_path / "get_throttled"
    sysfs.write_text("50005\n")  # the kernel's "%x\n"
    assert read_throttled(sysfs) == PiHealth(throttled=0x50005, source="sysfs")
    assert read_throttled(tmp_path / "absent") == PiHealth()  # not a Pi: nothing to say
    sysfs.write_text("garbage\n")
    assert read_throttled(sysfs).error == f"{sysfs}: not a throttled value: 'garbage'"


def test_a_hanging_or_failing_vcgencmd_is_bounded_and_said(tmp_path, monkeypatch):
    hanging = FakeVcgencmd(tmp_path / "hang", hang=True)
    monkeypatch.setenv("PATH", hanging.path_env())
    started = time.monotonic()
    health = read_throttled(NO_SYSFS, timeout=0.5)
    assert time.monotonic() - started < 5
    assert (health.throttled, health.error) == (None, "vcgencmd get_throttled timed out after 0.5 s")
    assert health.problems(None) == ["throttling unknown: vcgencmd get_throttled timed out after 0.5 s"]
    broken = FakeVcgencmd(tmp_path / "broken")
    broken.output.write_text("VCHI initialization failed\n")
    monkeypatch.setenv("PATH", broken.path_env())
    assert read_throttled(NO_SYSFS).error == "vcgencmd get_throttled: not a throttled value: 'VCHI initialization failed'"


def test_older_heartbeats_stay_valid_and_bad_bits_are_refused():
    old = {"agent": "pi-1", "version": "0.1.0", "uptime_seconds": 1.0, "supernode": {"state": "connected"}}
    assert Heartbeat.model_validate(old).pi_health is None
    health = PiHealth(throttled=0x50005, source="vcgencmd", max_temp_c=80.0,
                      last_decline=Decline(time=1.0, campaign="c-1", round=2, reason="84.0 °C >= ..."))
    beat = Heartbeat.model_validate({**old, "pi_health": health.model_dump()})
    assert Heartbeat.model_validate_json(beat.model_dump_json()) == beat
    for bad in (-1, 2**32):
        with pytest.raises(ValueError, match="pi_health.throttled"):
            Heartbeat.model_validate({**old, "pi_health": {"throttled": bad}})


def _train_config() -> TrainConfig:
    return TrainConfig(labels=["head", "hardhat"], local_epochs=1, batch_size=8, learning_rate=0.1, momentum=0.9,
                       seed=1, campaign="c-1", backbone_sha="0" * 64, trainer_sha="0" * 64, server_round=2)


def test_the_clientapp_declines_when_hot_or_under_voltage(tmp_path, monkeypatch):
    fake = FakeVcgencmd(tmp_path, 0x0)
    monkeypatch.setenv("PATH", fake.path_env())
    thermal = thermal_dir(tmp_path / "thermal", 84.0)
    node = NodeConfig(data_dir=tmp_path, cache_dir=tmp_path, agent_name="pi-b", max_temp_c=80.0,
                      thermal_dir=thermal, throttled_file=NO_SYSFS)
    assert NodeConfig.from_flwr(dict(_flwr_pairs(node))) == node  # through --node-config unchanged
    declined = health_decline(node, _train_config())
    assert (declined.campaign, declined.round, declined.reason) == ("c-1", 2, "84.0 °C >= training.max_temp_c 80.0")
    thermal_dir(thermal, 79.9)
    assert health_decline(node, _train_config()) is None
    fake.set(0x50000)  # under-voltage since boot only: trains
    assert health_decline(node, _train_config()) is None
    fake.set(0x50005)
    assert health_decline(node, _train_config()).reason == "under-voltage now (throttled=0x50005)"


def _flwr_pairs(node: NodeConfig):
    """What Flower parses from `--node-config` (key="value" pairs, values as strings)."""
    for pair in node.to_flwr().split('" '):
        key, _, value = pair.partition("=")
        yield key, value.strip('"')


def _message(node_id: int, content: RecordDict) -> Message:
    return Message(content, reply_to=Message(RecordDict(), node_id, "train"))


def _declined(agent: str, reason: str) -> RecordDict:
    return RecordDict({"declined": ConfigRecord({"agent": agent, "reason": reason})})


@pytest.fixture
def strategy(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 7), ("_node_id", 1), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)
    strategy = DeadlineFedAvg(min_nodes=2, min_completed=1, node_wait_seconds=1, log=_Quiet(), max_examples=1000,
                              pseudo=OFF)
    strategy.rounds[1] = RoundLedger(2, 0, SPECS)
    return strategy


def test_a_declined_node_is_counted_as_declined_not_failed(strategy):
    trained = reply(10, 10, 0)
    trained["info"] = ConfigRecord({"agent": "pi-a", "skipped": ""})
    reason = "84.0 °C >= training.max_temp_c 80.0"
    arrays, metrics = strategy.aggregate_train(1, [_message(11, trained), _message(12, _declined("pi-b", reason))])
    ledger = strategy.rounds[1]
    assert [p.agent for p in ledger.participants] == ["pi-a"] and ledger.failures == []
    assert [(d.agent, d.node_id, d.reason) for d in ledger.declines] == [("pi-b", 12, reason)]
    fields = ledger.event_fields()
    assert (fields["failed"], fields["declined"], fields["timed_out"]) == (0, 1, 0)
    assert metrics["num-examples"] == 10 and arrays is not None
    rounds = [{"round": 1, "declines": [d.model_dump() for d in ledger.declines]}]
    assert declined_text(rounds) == f"pi-b declined round 1: {reason}"


def test_a_round_everyone_declined_fails_with_the_reasons(strategy):
    with pytest.raises(CampaignError) as caught:
        strategy.aggregate_train(1, [_message(12, _declined("pi-b", "under-voltage now (throttled=0x50005)"))])
    assert str(caught.value) == ("round 1: 0 node(s) completed training, need 1 (0 failed, 1 declined, 1 timed out)"
                                 "; pi-b declined: under-voltage now (throttled=0x50005)")


def test_the_fleet_view_says_the_pis_problems_in_words():
    health = PiHealth(throttled=0x50005, source="vcgencmd", max_temp_c=80.0)
    beat = Heartbeat(agent="pi-b", version="0.1.0", uptime_seconds=1.0, cpu_temperature_c=82.3,
                     supernode={"state": "connected"}, pi_health=health)
    row = AgentRow(name="pi-b", online=True, heartbeat_age_seconds=1.0, address=None, heartbeat=beat)
    assert row.problems == ["UNDER-VOLTAGE now, THROTTLED now (throttled=0x50005)",
                            "82.3 °C >= training.max_temp_c 80.0"]
    assert row.to_json()["problems"] == row.problems
    shown = row.to_json()["pi_health"]
    assert shown["throttled_hex"] == "0x50005" and shown["now"] == ["under-voltage", "throttled"]
    assert pi_health.DEFAULT_MAX_TEMP_C == 80.0
    assert readings(beat) == "82.3 °C" and readings(beat.model_copy(update={"disk_free_bytes": 12_345_678_901})) \
        == "82.3 °C, SD 12.3 GB free"


def test_the_campaign_record_keeps_who_declined_and_why(tmp_path):
    from fed_coordinator.state import State

    state = State(tmp_path / "coordinator.db")
    state.campaign_started("c-1", "manual", None)
    decline = {"agent": "pi-b", "node_id": 12, "reason": "84.0 °C >= training.max_temp_c 80.0"}
    state.round_recorded("c-1", {"round": 1, "server_accuracy": 0.9, "participants": [{}], "declines": [decline]})
    state.round_recorded("c-1", {"round": 2, "server_accuracy": 0.9, "participants": [{}]})  # an older ServerApp's
    rounds = state.campaigns()[0]["rounds"]
    assert [r["declines"] for r in rounds] == [[decline], []] and rounds[0]["failures"] == []


def test_the_gauges_say_each_condition_now_and_since_boot():
    from prometheus_client import CollectorRegistry, generate_latest

    from fed_coordinator.api.pi_health_view import pi_health_gauges

    def row(name: str, health: PiHealth | None, celsius: float | None) -> AgentRow:
        beat = Heartbeat(agent=name, version="0.1.0", uptime_seconds=1.0, cpu_temperature_c=celsius,
                         supernode={"state": "connected"}, pi_health=health)
        return AgentRow(name=name, online=True, heartbeat_age_seconds=1.0, address=None, heartbeat=beat)

    reg = CollectorRegistry()
    pi_health_gauges(reg, [row("pi-a", PiHealth(throttled=0x50005, max_temp_c=80.0), 82.3),
                           row("pi-x", PiHealth(), None), row("old", None, 40.0)])
    text = generate_latest(reg).decode()
    for condition, when, value in (("under-voltage", "now", 1), ("throttled", "since_boot", 1),
                                   ("arm frequency capped", "now", 0), ("soft temperature limit", "since_boot", 0)):
        assert f'fed_agent_pi_condition{{agent="pi-a",condition="{condition}",when="{when}"}} {value}.0' in text
    assert 'fed_agent_cpu_temperature_celsius{agent="pi-a"} 82.3' in text
    assert 'fed_agent_cpu_temperature_celsius{agent="old"} 40.0' in text
    assert 'agent="pi-x",condition' not in text  # no firmware interface: no bits, rather than zeros
    assert 'fed_agent_training_declined{agent="pi-x"} 0.0' in text and 'declined{agent="old"}' not in text


def test_declines_in_the_follow_line_and_on_the_status_page_are_escaped():
    from fed_coordinator.api.status_page import render_status_page
    from fed_coordinator.fedctl.campaigns import _round_line

    decline = {"agent": "pi-b\x1b[2J", "node_id": 12, "reason": "<script>84.0 °C >= training.max_temp_c 80.0"}
    rnd = {"round": 1, "server_accuracy": 0.9629, "participants": 1, "failures": [], "declines": [decline]}
    assert _round_line(rnd) == ("round 1: server accuracy 0.963 (1 agents; pi-b\\x1b[2J declined: "
                                "<script>84.0 °C >= training.max_temp_c 80.0)")
    campaign = {"id": "c-1", "trigger": "manual", "status": "completed", "reason": "", "model_version": 1,
                "rounds": [{**rnd, "agents": [], "server_loss": 0.1}]}
    page = render_status_page([], [campaign], [], None)
    assert '<td class="declined">pi-b\x1b[2J declined round 1: &lt;script&gt;84.0 °C' in page
    assert "<script>" not in page
