"""Run the project's Ansible against booted test hosts, the way an operator would.

Why parse the PLAY RECAP: idempotence is judged per host from Ansible's own counters
(a second run must report changed=0 everywhere), not from our guesses about what changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_VENV = REPO / ".venv-ansible"
PLAYBOOK = REPO / "ansible" / "provision.yml"
_RECAP = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")


def write_inventory(path: Path, hosts: dict, key: Path) -> Path:
    """The inventory an operator writes: coordinator group, pis group, root over SSH by key."""
    ip = {name: h.ip for name, h in hosts.items()}
    path.write_text(
        "[coordinator]\n"
        f"coord ansible_host={ip['coord']}\n"
        "[pis]\n"
        f"pi1 ansible_host={ip['pi1']}\n"
        f"pi2 ansible_host={ip['pi2']}\n"
        "[all:vars]\n"
        "ansible_user=root\n"
        "ansible_python_interpreter=/usr/bin/python3\n"
        f"ansible_ssh_private_key_file={key}\n")
    return path


CANARY_SECONDS = 25


def write_vars(path: Path, pki_dir: Path, coordinator_ip: str) -> Path:
    """Extra vars: install from the bind-mounted wheelhouse, a short campaign on the shared photos."""
    path.write_text(
        "fed_install_source: wheelhouse\n"
        "fed_wheelhouse_dir: /srv/wheelhouse\n"
        f"fed_coordinator_address: {coordinator_ip}\n"
        f"fed_pki_dir: {pki_dir}\n"
        "fed_backbone_weights: /srv/shared/models/mobilenet_v2_1.00_160_no_top.weights.h5\n"
        "fed_server_data_src: /srv/shared/datasets/dataset_server\n"
        # heartbeats every 15 s: the phases that wait for one (a new champion) wait less
        "fed_agent_heartbeat_interval: 15\n"
        # the canary Pi runs each champion for 25 s before the other one gets it
        f"fed_coordinator_config_overrides: {{rollout: {{canary_minutes: {CANARY_SECONDS / 60:.4f}}}}}\n"
        # a round waits at most 90 s for a Pi that went silent (the network-cut phase)
        "fed_campaign_settings: {rounds: 2, local_epochs: 2, min_nodes: 2, round_timeout_seconds: 90,"
        " node_wait_seconds: 60}\n")
    return path


def ansible_env(workdir: Path) -> dict:
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_PIPELINING="True",
               ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null",
               ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"), ANSIBLE_HOME=str(workdir / "ansible-home"))
    cfg = REPO / "ansible" / "ansible.cfg"
    if cfg.is_file():  # the project's own settings (roles path etc.), as an operator gets them
        env["ANSIBLE_CONFIG"] = str(cfg)
    return env


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """{host: {"ok": n, "changed": n, ...}} from the PLAY RECAP section of ansible's output."""
    recap, inside = {}, False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            inside, recap = True, {}
            continue
        m = _RECAP.match(line.strip()) if inside else None
        if m:
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return recap


def run_playbook(inventory: Path, extra_vars: Path, workdir: Path, log_name: str,
                 timeout: float = 2400) -> tuple[subprocess.CompletedProcess, dict, float]:
    """ansible-playbook -i INVENTORY -e @VARS ansible/provision.yml; output kept in workdir."""
    cmd = [str(ANSIBLE_VENV / "bin/ansible-playbook"), "-i", str(inventory), "-e", f"@{extra_vars}",
           str(PLAYBOOK.relative_to(REPO))]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=ansible_env(workdir), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    (workdir / log_name).write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc, parse_recap(proc.stdout), elapsed


def ping_all(inventory: Path, workdir: Path) -> subprocess.CompletedProcess:
    cmd = [str(ANSIBLE_VENV / "bin/ansible"), "-i", str(inventory), "all", "-m", "ping", "-o"]
    return subprocess.run(cmd, cwd=REPO, env=ansible_env(workdir), capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def failure_excerpt(proc: subprocess.CompletedProcess, lines: int = 60) -> str:
    """The failed tasks and the recap: what a person needs to see when the playbook breaks."""
    out = proc.stdout.splitlines()
    keep = [i for i, line in enumerate(out) if line.startswith(("fatal:", "failed:")) or "FAILED!" in line]
    picked = []
    for i in keep[:5]:
        picked += out[max(0, i - 2): i + 8]
    tail = out[-lines:]
    return "\n".join(picked + ["..."] + tail) + ("\n" + proc.stderr[-1500:] if proc.stderr else "")
