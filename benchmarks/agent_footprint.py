"""Idle memory of a real fed-agent: the agent process alone and its whole process tree.

Starts a SuperLink (coordinator venv) and fed-agent (agent venv) on loopback, waits until the
agent's node is online, lets it settle, then samples VmRSS of the agent and of every
descendant (flower-supernode, flower-superexec) once a second and prints the medians.
Targets (issue 3): agent <= 60 MB, tree <= 200 MB.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config  # noqa: E402
from fed_demo.local_fleet import free_port  # noqa: E402
from fed_coordinator.flower import FlwrCli, SuperLink  # noqa: E402


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pss(pid: int) -> int:
    """Proportional set size: shared library pages split between the processes mapping them."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def main(settle: float = 15.0, samples: int = 10) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        link = SuperLink(tmp / "superlink", port=free_port()).start()
        beats, notify = HeartbeatServer(), NotifySocket(tmp / "notify.sock")
        token = token_file(tmp)
        cfg = write_config(tmp / "agent.yaml", tmp / "state", link.address, beats.url, token,
                           free_port())
        agent = AgentProcess(cfg, notify, tmp / "agent.log")
        cli = FlwrCli(tmp / "cli", link.address)
        try:
            deadline = time.monotonic() + 60
            while not any(n["status"] == "online" for n in cli.supernodes()):
                if time.monotonic() > deadline:
                    raise SystemExit("agent's node never came online")
                time.sleep(1)
            time.sleep(settle)
            agent_rss, tree_rss, tree_pss, names = [], [], [], {}
            for _ in range(samples):
                kids = descendants(agent.proc.pid)
                agent_rss.append(rss(agent.proc.pid))
                tree_rss.append(agent_rss[-1] + sum(rss(k) for k in kids))
                tree_pss.append(pss(agent.proc.pid) + sum(pss(k) for k in kids))
                for k in kids:
                    argv = Path(f"/proc/{k}/cmdline").read_text().split("\0")
                    script = argv[1] if argv[0].endswith(("python", "python3")) and len(argv) > 1 else argv[0]
                    names[script.rsplit("/", 1)[-1]] = round(rss(k) / 1024 / 1024, 1)
                time.sleep(1)
        finally:
            agent.stop()
            link.stop()
            beats.close()
            notify.close()
    mb = 1024 * 1024
    print(json.dumps({
        "machine": f"{platform.machine()} {platform.python_version()}",
        "agent_rss_mb_median": round(statistics.median(agent_rss) / mb, 1),
        "tree_rss_mb_median": round(statistics.median(tree_rss) / mb, 1),
        "tree_pss_mb_median": round(statistics.median(tree_pss) / mb, 1),
        "tree_processes_rss_mb_last": names,
        "samples": samples, "settle_seconds": settle,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
