"""fed-coordinator for real: fleet API, run-now, champion gate, crash mid-campaign."""

import json
import shutil
import subprocess
import urllib.request

import pytest

from conftest import REPO, WEIGHTS, copy_small_dataset, free_port, needs_agent_venv, needs_shared, wait_for
from test_api_heartbeat import GOOD, post
from coordinator_harness import BIN, CoordinatorProcess, fedctl, write_coordinator_config
from fed_demo.local_fleet import SuperNodeProcess
from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.state import State

pytestmark = [needs_shared, needs_agent_venv]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("coordinator")
    data = copy_small_dataset(root / "data")
    sl_port, api_port = free_port(), free_port()
    cfg = write_coordinator_config(root / "coordinator.yaml", root / "state", data, WEIGHTS,
                                   sl_port, api_port)
    coord = CoordinatorProcess(cfg, root / "coordinator.log")
    coord.wait_ready()
    nodes = [SuperNodeProcess(f"pi-{i}", f"127.0.0.1:{sl_port}", data / f"dataset_client{i}",
                              root / f"agent-{i}", free_port()).start() for i in (1, 2)]
    tokens = {}
    for name in ("pi-1", "pi-2"):
        out = fedctl(cfg, "agent-add", name, "--token-file", str(root / f"{name}.token"))
        assert out.returncode == 0, out.stderr
        tokens[name] = (root / f"{name}.token").read_text().strip()
        assert (root / f"{name}.token").stat().st_mode & 0o777 == 0o600
    e = {"root": root, "cfg": cfg, "coord": coord, "nodes": nodes, "tokens": tokens,
         "api": f"http://127.0.0.1:{api_port}"}
    yield e
    e["coord"].stop()
    for n in nodes:
        n.stop()


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_bad_config_exits_78(tmp_path):
    cfg = write_coordinator_config(tmp_path / "c.yaml", tmp_path, tmp_path, WEIGHTS, 9999, 9998,
                                   schedule__cron="every night", api__port=80)
    out = subprocess.run([str(BIN / "fed-coordinator"), "-c", str(cfg)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 78
    assert "At 'schedule.cron': not a valid cron expression" in out.stderr
    assert "At 'api.port': must be at least 1024" in out.stderr


def test_heartbeat_api(env):
    """Both agents report (the API's refusals are tests/test_api_heartbeat.py's)."""
    url = env["api"] + "/api/v1/heartbeat"
    for name in ("pi-1", "pi-2"):
        body = json.dumps({**GOOD, "agent": name}).encode()
        assert post(url, body, env["tokens"][name]) == (200, {"ok": True, "agent": name, "desired_model": None})
    fleet = {a["name"]: a for a in get_json(env["api"] + "/api/v1/fleet")["agents"]}
    assert fleet["pi-1"]["online"] and fleet["pi-1"]["images"]["quarantined"] == 1
    out = fedctl(env["cfg"], "fleet")
    assert out.returncode == 0 and "pi-1" in out.stdout and "online" in out.stdout


def test_run_now_completes_and_first_model_becomes_champion(env):
    cfg = env["cfg"]
    out = fedctl(cfg, "run-now")
    assert out.returncode == 0 and out.stdout.startswith("started campaign"), out.stdout + out.stderr
    again = fedctl(cfg, "run-now")
    assert again.returncode == 1 and "already running" in again.stdout
    follow = fedctl(cfg, "campaigns", "--follow", timeout=400)
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert "round 3: server accuracy" in follow.stdout and "completed" in follow.stdout
    models = json.loads(fedctl(cfg, "--json", "models").stdout)
    assert models["champion"] == 1 and models["models"][0]["status"] == "champion"
    assert models["models"][0]["reason"].startswith("first model: accuracy ")  # and meets champion.min_accuracy
    deploys = json.loads(fedctl(cfg, "--json", "deploys").stdout)["deployments"]
    assert [d["status"] for d in deploys] == ["skipped"]  # no API key file: skipped, said once
    skipped = [e for e in env["coord"].events() if e.get("event") == "deploy_skipped"]
    assert len(skipped) == 1 and "no Edge Impulse API key file" in skipped[0]["reason"]
    metrics = urllib.request.urlopen(env["api"] + "/metrics", timeout=10).read().decode()
    assert 'fed_campaigns_total{status="completed"} 1.0' in metrics
    assert 'fed_agent_heartbeat_age_seconds{agent="pi-1"}' in metrics
    assert "fed_champion_version 1.0" in metrics


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_status_page_in_headless_chromium(env):
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "status-page.png"
    shot.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={env['root'] / 'chromium'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", env["api"] + "/"], capture_output=True,
                         text=True, timeout=120).stdout
    assert 'data-agent="pi-1"' in dom and 'data-agent="pi-2"' in dom
    assert '<svg id="accuracy-chart"' in dom and 'class="series"' in dom
    subprocess.run(["chromium", *flags, "--window-size=1200,1500", f"--screenshot={shot}",
                    env["api"] + "/"], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    with Image.open(shot) as img:  # the chart's coloured line is really drawn
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert any(abs(r - 0x1f) < 30 and abs(g - 0x77) < 30 and abs(b - 0xb4) < 30 for _, (r, g, b) in colours)


def test_coordinator_killed_mid_campaign(env):
    cfg, root = env["cfg"], env["root"]
    assert fedctl(cfg, "run-now").returncode == 0
    state = State(root / "state" / "coordinator.db")
    running = wait_for(state.running_campaign, 30, what="running campaign")
    wait_for(lambda: state.campaigns(1)[0]["rounds"], 300, what="a round recorded")
    env["coord"].kill_all()  # SIGKILL: the coordinator and its SuperLink die mid-campaign
    env["coord"] = CoordinatorProcess(cfg, root / "coordinator.log")
    env["coord"].wait_ready()
    camp = next(c for c in state.campaigns() if c["id"] == running["id"])
    assert camp["status"] == "interrupted"
    assert camp["reason"] == "the coordinator stopped while the campaign ran"
    reg = ModelRegistry(root / "state" / "models")
    assert reg.versions() == [1] and not list(reg.root.glob(".incoming-*"))
    wait_for(lambda: sum(n["status"] == "online" for n in json.loads(
        subprocess.run([str(BIN / "flwr"), "supernode", "ls", "fleet", "--format", "json"],
                       capture_output=True, text=True,
                       env={"FLWR_HOME": str(root / "state" / "flwr-cli"), "PATH": str(BIN)}).stdout
    ).get("nodes", [])) == 2, 60, what="both SuperNodes back")
    assert fedctl(cfg, "run-now").returncode == 0
    follow = fedctl(cfg, "campaigns", "--follow", timeout=400)
    assert follow.returncode == 0, follow.stdout
    assert reg.versions() == [1, 2]
    v2 = next(m for m in json.loads(fedctl(cfg, "--json", "models").stdout)["models"] if m["version"] == 2)
    assert v2["status"] in ("champion", "rejected")
    if v2["status"] == "rejected":  # both scores are on record
        assert "does not beat champion v1" in v2["reason"]


def test_promote_rollback_and_deploy_by_hand(env):
    cfg = env["cfg"]
    models = json.loads(fedctl(cfg, "--json", "models").stdout)
    champion = models["champion"]
    other = next(m["version"] for m in models["models"] if m["version"] != champion)
    out = fedctl(cfg, "promote", "99")
    assert out.returncode == 1 and "no registered model v99" in out.stdout
    out = fedctl(cfg, "promote", str(champion))
    assert out.returncode == 1 and "already the champion" in out.stdout
    deploys_before = len(json.loads(fedctl(cfg, "--json", "deploys").stdout)["deployments"])
    assert fedctl(cfg, "promote", str(other)).returncode == 0
    models = {m["version"]: m for m in json.loads(fedctl(cfg, "--json", "models").stdout)["models"]}
    assert models[other]["champion"] and models[champion]["status"] == "retired"
    out = fedctl(cfg, "rollback")
    assert out.returncode == 0 and f"v{champion} is the champion again" in out.stdout
    models = json.loads(fedctl(cfg, "--json", "models").stdout)
    assert models["champion"] == champion
    assert {m["version"]: m["status"] for m in models["models"]}[other] == "rolled-back"
    assert fedctl(cfg, "deploy", "1").returncode == 0
    deploys = json.loads(fedctl(cfg, "--json", "deploys").stdout)["deployments"]
    assert len(deploys) == deploys_before + 3  # promote, rollback and deploy each queued one


def superlink_and_serverapp_pids(coord) -> list[int]:
    """The SuperLink child and the ServerApp process of its running campaign."""
    from pathlib import Path

    kids = Path(f"/proc/{coord.proc.pid}/task/{coord.proc.pid}/children").read_text().split()
    link = next(int(p) for p in kids if "flower-superlink" in Path(f"/proc/{p}/cmdline").read_text())
    link_argv = Path(f"/proc/{link}/cmdline").read_text().split("\0")
    port = link_argv[link_argv.index("--port") + 1]
    apps = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_text().split("\0")
        except OSError:
            continue
        if any(a.endswith("flwr-serverapp") for a in argv) and f"127.0.0.1:{port}" in argv:
            apps.append(int(proc.name))
    return [link, *apps]


def test_campaign_resubmitted_once_after_superlink_restart(env):
    import os
    import signal

    cfg, root = env["cfg"], env["root"]
    state = State(root / "state" / "coordinator.db")
    assert fedctl(cfg, "run-now").returncode == 0
    first = wait_for(lambda: (c := state.running_campaign()) and c["run_id"] and c, 60,
                     what="campaign submitted")
    wait_for(lambda: state.campaigns(1)[0]["rounds"], 120, what="first round")
    # A crash that takes the run with it: the SuperLink and the run's ServerApp die. (When
    # only the SuperLink restarts, Flower 1.42 lets the ServerApp reconnect and finish.)
    pids = wait_for(lambda: (p := superlink_and_serverapp_pids(env["coord"])) and len(p) >= 2 and p,
                    30, what="the run's ServerApp process")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    def resubmitted_done():
        camps = state.campaigns(20)
        again = [c for c in camps if c["trigger"] == "resubmit" and c["status"] != "running"]
        return again[0] if again else None

    again = wait_for(resubmitted_done, 400, interval=2, what="resubmitted campaign finished")
    assert again["status"] == "completed", again["reason"]
    original = next(c for c in state.campaigns(20) if c["id"] == first["id"])
    assert original["status"] == "failed"
    events = env["coord"].events()
    assert any(e.get("event") == "superlink_exited" for e in events)
    assert [e["campaign"] for e in events if e.get("event") == "campaign_resubmitted"] == [first["id"]]
