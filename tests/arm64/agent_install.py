"""Install the agent in the arm64 chroot the way ansible/roles/fed_agent/tasks/install.yml does.

Why replay the role rather than `pip install fed-agent`: what a Pi gets is the role's
result (the wheelhouse copied to /srv/wheelhouse/agent, a venv made by Debian's python3,
EVERY wheel of the folder pinned name==version from its file name, pip offline with
--no-index), so that is what must be shown to work on arm64.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from conftest import REPO

from .chroot import run_in

WHEELHOUSE_DIR = "/srv/wheelhouse"  # ansible/group_vars/all.yml: fed_wheelhouse_dir
VENV = "/opt/fed-agent/venv"  # roles/fed_agent/defaults: fed_agent_venv
PYTHON = "/usr/bin/python3"  # group_vars: fed_python


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower())


def role_pins(folder: Path) -> list[str]:
    """name==version for each wheel, as the role's "Compare the wheelhouse" fact computes them."""
    pins = set()
    for whl in folder.glob("*.whl"):
        m = re.match(r"^([^-]+)-([^-]+)-.*\.whl$", whl.name)
        if m:
            pins.add(f"{canonical(m.group(1))}=={m.group(2).lower()}")
    return sorted(pins)


def _checked(root: Path, argv: list[str], timeout: float, what: str):
    proc = run_in(root, argv, timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed in the arm64 chroot ({proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def install_agent(root: Path, agent_wheels: Path) -> dict:
    """Copy the wheels in, make the venv, install the missing pins offline; returns timings (s)
    and what pip installed."""
    timings = {}
    start = time.monotonic()
    dest = root / WHEELHOUSE_DIR.lstrip("/") / "agent"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(agent_wheels, dest)
    pins = role_pins(dest)
    _checked(root, [PYTHON, "-m", "venv", VENV], 600, "python3 -m venv")
    listed = _checked(root, [f"{VENV}/bin/python", "-m", "pip", "list", "--format=json",
                             "--disable-pip-version-check"], 300, "pip list")
    installed = {f"{canonical(p['name'])}=={p['version']}" for p in json.loads(listed.stdout)}
    missing = [pin for pin in pins if pin not in installed]
    timings["venv"] = time.monotonic() - start
    start = time.monotonic()
    _checked(root, [f"{VENV}/bin/python", "-m", "pip", "install", "--no-index", "--find-links",
                    f"{WHEELHOUSE_DIR}/agent", "--disable-pip-version-check", "--no-input", *missing],
             1500, "the role's offline pip install")
    timings["pip install"] = time.monotonic() - start
    probe = _checked(root, [f"{VENV}/bin/python", "-c", PROBE], 300, "importing the agent")
    return {"timings": timings, "pins": missing, **json.loads(probe.stdout)}


# What the venv runs on, and that TensorFlow is not there (a Pi must never get it).
PROBE = ("import json, platform, importlib.util as u, tflite_runtime.interpreter, fed_agent.cli, "
         "fedapp.client_app; print(json.dumps({'machine': platform.machine(), "
         "'tensorflow': bool(u.find_spec('tensorflow'))}))")


def add_interpreter(root: Path, agent_wheels: Path, name: str = "ai-edge-litert") -> float:
    """Install the second TFLite backend's pin (from the wheelhouse built for it) into the same
    venv, offline; the seconds it took. Why not a second venv: fedapp.tflite picks either
    where both are installed (FED_TFLITE_BACKEND), the way the lead documented comparing them
    on one host, and a second role install under emulation costs 80 s more."""
    start = time.monotonic()
    dest = root / WHEELHOUSE_DIR.lstrip("/") / f"agent-{name}"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(agent_wheels, dest)
    pin = next(p for p in role_pins(dest) if p.startswith(f"{name}=="))
    _checked(root, [f"{VENV}/bin/python", "-m", "pip", "install", "--no-index", "--find-links",
                    f"{WHEELHOUSE_DIR}/agent-{name}", "--disable-pip-version-check", "--no-input", pin],
             600, f"pip install {pin}")
    return time.monotonic() - start


def build_wheelhouse(out: Path, interpreter: str, log=print) -> Path:
    """packaging/build_wheelhouse.sh OUT --platform linux_aarch64 --only agent
    --interpreter INTERPRETER; OUT/agent.

    Rebuilt on every run: the project's wheels are what is under test, and with pip's cache
    the dependencies' aarch64 wheels are not downloaded again (about 25 s here)."""
    out.mkdir(parents=True, exist_ok=True)
    log_file = out.parent / f"{out.name}-build.log"
    start = time.monotonic()
    with open(log_file, "w") as fh:
        proc = subprocess.run(["bash", str(REPO / "packaging" / "build_wheelhouse.sh"), str(out), "--platform",
                               "linux_aarch64", "--only", "agent", "--interpreter", interpreter], cwd=REPO,
                              # ai-edge-litert's aarch64 build is refused for fleets (it cannot train);
                              # here it is wanted for the inference comparison and the xfail
                              env=dict(os.environ, FED_ALLOW_LITERT_AARCH64="1"),
                              stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"build_wheelhouse.sh --platform linux_aarch64 failed ({proc.returncode}):\n"
                           + log_file.read_text(errors="replace")[-4000:])
    log(f"arm64 wheelhouse ({interpreter}): built in {time.monotonic() - start:.0f}s ({out})")
    return out / "agent"
