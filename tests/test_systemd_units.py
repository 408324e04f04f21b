"""The unit files systemd-analyze accepts without a word (warnings count as failures)."""

import re
import shutil
import subprocess

import pytest

from conftest import REPO

UNITS = REPO / "systemd"
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")


@needs_analyze
@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.glob("*.service")))
def test_unit_verifies_clean(tmp_path, unit):
    text = (UNITS / unit).read_text()
    # verify needs the ExecStart binaries to exist: point them at this checkout's venv
    bins = {"/opt/fed-agent/venv/bin/": REPO / ".venv-agent" / "bin",
            "/opt/fed-coordinator/venv/bin/": REPO / ".venv" / "bin"}
    for prefix, real in bins.items():
        text = text.replace(prefix, f"{real}/")
    (tmp_path / unit).write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)],
                          capture_output=True, text=True, timeout=60)
    assert proc.stderr == "" and proc.returncode == 0, proc.stderr


def test_agent_unit_has_the_promised_settings():
    text = (UNITS / "fed-agent.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["Type"] == "notify"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["Restart"] == "always"
    assert settings["RestartPreventExitStatus"] == "78"
    assert settings["StateDirectory"] == "fed-agent"
    assert settings["User"] == "fed-agent"
    for key in ("ProtectSystem", "PrivateTmp", "NoNewPrivileges"):
        assert key in settings
    # temp files (Flower's per-message app unpacking) in RAM: fewer SD-card writes
    assert settings["RuntimeDirectory"] == "fed-agent" and settings["Environment"] == "TMPDIR=/run/fed-agent"


def exposure(text: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", text)
    assert match, text[-2000:]
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.glob("*.service")))
def test_unit_exposure_is_at_most_1_5(tmp_path, unit):
    """`systemd-analyze security` on the unit file (the system test repeats it under real systemd)."""
    (tmp_path / unit).write_text((UNITS / unit).read_text())
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(tmp_path / unit)],
                          capture_output=True, text=True, timeout=60)
    assert exposure(proc.stdout + proc.stderr) <= 1.5


def test_units_bound_memory_and_tasks():
    for unit in UNITS.glob("*.service"):
        settings = dict(re.findall(r"^(\w+)=(.*)$", unit.read_text(), re.M))
        for key in ("MemoryHigh", "MemoryMax", "TasksMax", "ProtectProc", "UMask"):
            assert settings.get(key), (unit.name, key)
        assert settings["ProtectProc"] == "invisible" and settings["UMask"] == "0077", unit.name
