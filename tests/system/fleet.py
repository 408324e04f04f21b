"""Operator-level checks on a provisioned fleet, through the same tools a person uses.

Why through fedctl/systemctl over SSH: the system test judges what an operator would see
(fleet view, campaigns, models, unit state), not internal files, and every wait polls with
a deadline rather than sleeping for a guessed time.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from datetime import datetime

FEDCTL = "/opt/fed-coordinator/venv/bin/fedctl"
AGENT_STATE = "/var/lib/fed-agent"


def wait_until(predicate, timeout: float, what: str, interval: float = 2.0):
    """Poll until `predicate()` is truthy; on timeout say what was awaited and the last value."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def wait_active(host, unit: str, timeout: float) -> None:
    """Wait for `systemctl is-active UNIT` to say active; on timeout show the unit's journal."""
    try:
        wait_until(lambda: host.ssh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active",
                   timeout, f"{unit} active on {host.name}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- journal of {unit} on {host.name}:\n{host.journal(unit)[-4000:]}") from None


def fedctl(coord, *args: str, timeout: float = 120) -> dict:
    out = coord.ssh(shlex.join([FEDCTL, "--json", *args]), timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def unit_props(host, unit: str) -> dict[str, str]:
    out = host.ssh(f"systemctl show {unit} -p ActiveState -p SubState -p MainPID -p NRestarts").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def agents_fresh(coord, names: list[str], since: float) -> dict | None:
    """Fleet rows of `names` if each is online with a heartbeat received after `since`."""
    rows = {a["name"]: a for a in fedctl(coord, "fleet")["agents"]}
    age_limit = time.time() - since
    ok = all(n in rows and rows[n]["online"] and rows[n]["heartbeat_age_seconds"] is not None
             and rows[n]["heartbeat_age_seconds"] <= age_limit for n in names)
    return rows if ok else None


def pis_running(coord, names: list[str], version: int) -> dict | None:
    """The `running_model` of each Pi once every one reports `version` running, state ok."""
    rows = {a["name"]: a for a in fedctl(coord, "fleet")["agents"]}
    models = {n: (rows.get(n) or {}).get("running_model") or {} for n in names}
    ok = all(m.get("version") == version and m.get("state") == "ok" for m in models.values())
    return models if ok else None


def agents_connected(coord, names: list[str], since: float) -> dict | None:
    """Like agents_fresh, and each agent reports its SuperNode connected."""
    rows = agents_fresh(coord, names, since)
    if rows and all(rows[n]["supernode_state"] == "connected" for n in names):
        return rows
    return None


def drop_photos(pi, src: str) -> int:
    """Copy SRC/<label>/* into the Pi's inbox as the fed-agent user would own them; returns the count."""
    script = f"""set -e
n=0
for d in {shlex.quote(src)}/*/; do
  label=$(basename "$d")
  install -d -o fed-agent -g fed-agent {AGENT_STATE}/inbox/"$label"
  for f in "$d"*; do
    install -o fed-agent -g fed-agent -m 0640 "$f" {AGENT_STATE}/inbox/"$label"/
    n=$((n+1))
  done
done
echo $n"""
    return int(pi.ssh(script).stdout.split()[-1])


def stored_counts(pi) -> tuple[int, int, int]:
    """(images filed under data/, files quarantined, files still waiting in the inbox)."""
    out = pi.ssh(f"cd {AGENT_STATE} && find data -type f ! -name '.*' | wc -l; "
                 "find quarantine -type f ! -name '*.reason.json' | wc -l; "
                 "find inbox -type f | wc -l").stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def run_campaign(coord, timeout: float = 1500) -> tuple[str, str, dict]:
    """fedctl run-now, then fedctl campaigns --follow until it ends; returns (id, follow output, row)."""
    started = coord.ssh(f"{FEDCTL} run-now").stdout.strip()
    cid = started.split()[-1]
    follow = coord.ssh(f"timeout {int(timeout)} {FEDCTL} campaigns --follow", check=False, timeout=timeout + 30)
    row = next(c for c in fedctl(coord, "campaigns", "--limit", "50")["campaigns"] if c["id"] == cid)
    assert follow.returncode == 0 and row["status"] == "completed", (
        f"campaign {cid} ({started!r}) did not complete: status {row['status']}, reason {row.get('reason')}\n"
        f"follow exit {follow.returncode}:\n{follow.stdout[-3000:]}\n{follow.stderr[-1000:]}")
    return cid, follow.stdout, row


def daemon_log_lines(host, unit: str, command_suffix: str = " run") -> tuple[list[str], int]:
    """MESSAGEs the unit's daemon process wrote (`journalctl -u UNIT -o cat`, minus the lines
    of systemd itself and of ExecStartPre's `validate-config`); returns (lines, skipped)."""
    out = host.ssh(f"journalctl _SYSTEMD_UNIT={unit}.service -o json --no-pager "
                   "--output-fields=MESSAGE,_CMDLINE,_PID").stdout
    lines, skipped = [], 0
    for raw in out.splitlines():
        entry = json.loads(raw)
        msg = entry.get("MESSAGE", "")
        if isinstance(msg, list):  # journald gives non-UTF-8 / binary messages as byte lists
            msg = bytes(msg).decode(errors="replace")
        if str(entry.get("_CMDLINE", "")).endswith(command_suffix):
            lines.append(msg)
        else:
            skipped += 1
    return lines, skipped


def agent_events(pi, event: str) -> list[dict]:
    """The fed-agent's log events named `event` (from the journal), oldest first."""
    events = []
    for line in daemon_log_lines(pi, "fed-agent")[0]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            events.append(entry)
    return events


def event_time(entry: dict) -> float:
    """A log event's ISO timestamp (structlog, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def non_json_lines(lines: list[str]) -> list[str]:
    """The lines that are not one JSON object each."""
    bad = []
    for line in lines:
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except ValueError:
            bad.append(line)
    return bad


def supernodes_online(coord) -> set[str]:
    """Node ids the SuperLink itself lists as online (`flwr supernode ls`, as the service user)."""
    home = "/var/lib/fed-coordinator/flwr-cli"
    # cd: flwr looks for FEDERATION/pyproject.toml in the working directory (root's home
    # is not readable by the service user).
    out = coord.ssh(f"cd {home} && runuser -u fed-coordinator -- env FLWR_HOME={home} FLWR_TELEMETRY_ENABLED=0 "
                    f"FLWR_DISABLE_UPDATE_CHECK=1 /opt/fed-coordinator/venv/bin/flwr supernode ls fleet "
                    "--format json", check=False).stdout
    try:
        data = json.loads(out[out.index("{"):])
    except ValueError:
        return set()
    nodes = data.get("nodes") or data.get("supernodes") or []
    return {str(n.get("node-id") or n.get("node_id")) for n in nodes if n.get("status") == "online"}


def rogue_supernode(pi, timeout: int = 90) -> tuple[int, str]:
    """Start a SuperNode on `pi` with a brand-new key nobody registered; (exit code, output)."""
    cfg = json.loads(pi.ssh("/opt/fed-agent/venv/bin/python -c 'import json, yaml; "
                            "print(json.dumps(yaml.safe_load(open(\"/etc/fed-agent/agent.yaml\"))))'").stdout)
    link = cfg["coordinator"]
    tls = ["--insecure"] if link.get("insecure") else ["--root-certificates", str(link["root_certificates"])]
    argv = ["/opt/fed-agent/venv/bin/flower-supernode", "--superlink", link["superlink"], *tls,
            "--auth-supernode-private-key", "$d/key", "--port", "9194", "--max-retries", "3"]
    script = (f"set -u; d=$(mktemp -d /root/rogue.XXXXXX); ssh-keygen -q -t ecdsa -b 384 -N '' -f $d/key; "
              # PATH: the SuperNode starts flower-superexec by name (the agent does the same)
              f"PATH=/opt/fed-agent/venv/bin:$PATH FLWR_HOME=$d/flwr FLWR_TELEMETRY_ENABLED=0 "
              f"FLWR_DISABLE_UPDATE_CHECK=1 "
              f"timeout {timeout} {' '.join(argv)} 2>&1; rc=$?; rm -rf $d; exit $rc")
    proc = pi.ssh(script, check=False, timeout=timeout + 30)
    return proc.returncode, proc.stdout + proc.stderr


def superlink_unknown_key_rejections(coord) -> int:
    """How often the SuperLink logged an activation by a key it does not know (its own reason)."""
    out = coord.ssh("grep -c 'No SuperNode found with the given public key' "
                    "/var/lib/fed-coordinator/superlink/superlink.log", check=False).stdout.strip()
    return int(out or 0)


def campaign_row(coord, cid: str) -> dict | None:
    return next((c for c in fedctl(coord, "campaigns", "--limit", "50")["campaigns"] if c["id"] == cid), None)


def progress_reached(progress_file, round_number: int) -> bool:
    """The ServerApp's progress.jsonl (read from the host's root) has evaluated that round."""
    try:
        lines = progress_file.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if event.get("event") == "round" and event.get("round", -1) >= round_number:
            return True
    return False


NETCUT = ("nft -f - <<'EOF'\n"
          "table inet netcut {\n"
          "  chain in { type filter hook input priority -10; policy drop; iifname lo accept; }\n"
          "  chain out { type filter hook output priority -10; policy drop; oifname lo accept; }\n"
          "}\nEOF")


def cut_network(pi) -> None:
    """Drop every packet in and out of the host but loopback (run through nsenter, not SSH)."""
    pi.run_in(NETCUT)


def restore_network(pi) -> None:
    pi.run_in("nft delete table inet netcut")


def security_exposure(host, unit: str) -> float:
    """`systemd-analyze security UNIT` under the host's real systemd: the overall exposure."""
    out = host.ssh(f"systemd-analyze security {unit} --no-pager", check=False).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out)
    assert match, out[-2000:]
    return float(match.group(1))


def photo_predicted_and_counted(coord, pi, version: int) -> tuple[dict, str]:
    """A photo dropped into the Pi's inbox is classified by the running model, written to
    predictions.jsonl and logged, and counted in the next heartbeat's field summary, which
    `fedctl fleet` shows."""
    def field_images() -> int:
        row = next(a for a in fedctl(coord, "fleet")["agents"] if a["name"] == pi.name)
        return (row.get("field") or {}).get("images", 0)

    before = field_images()
    folder = "/srv/shared/datasets/dataset_server/test/hardhat"
    photo = f"{folder}/{pi.ssh(f'ls {folder} | head -1').stdout.strip()}"
    sha = pi.ssh(f"sha256sum {photo}").stdout.split()[0]
    pi.ssh(f"install -o fed-agent -g fed-agent -m 0640 {photo} {AGENT_STATE}/inbox/hardhat/field-check.jpg")

    def prediction() -> dict | None:
        lines = pi.ssh(f"cat {AGENT_STATE}/predictions.jsonl", check=False).stdout.splitlines()
        return next((row for row in map(json.loads, lines) if row["sha256"] == sha), None)

    predicted = wait_until(prediction, 120, f"the photo in {pi.name}'s predictions.jsonl")
    assert predicted["model_version"] == version and predicted["human_label"] == "hardhat", predicted
    assert [e for e in agent_events(pi, "image_predicted") if e.get("sha256") == sha]
    counted = wait_until(lambda: (n := field_images()) >= before + 1 and n, 90,
                         f"the photo counted in {pi.name}'s field summary")
    table = coord.ssh(f"{FEDCTL} fleet").stdout
    row = next(line for line in table.splitlines() if line.startswith(pi.name))
    assert f" {counted} img, " in row, table
    return predicted, table
