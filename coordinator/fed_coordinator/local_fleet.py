"""A SuperLink and SuperNodes on one machine, for `make demo` and the integration tests.

SuperNodes run from the agent's environment (AGENT_BIN), which has no TensorFlow: Flower
spawns `flower-superexec` and `flwr-clientapp` by name from PATH, so that venv's bin folder
goes first on the SuperNodes' PATH.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .flower import flower_env

REPO = Path(__file__).resolve().parents[2]
AGENT_BIN = Path(os.environ.get("FED_AGENT_BIN", REPO / ".venv-agent" / "bin"))


@dataclass
class SuperNodeProcess:
    name: str
    superlink: str
    data_dir: Path
    state_dir: Path
    port: int
    bin_dir: Path = AGENT_BIN
    proc: subprocess.Popen | None = None
    extra_env: dict | None = None

    def start(self) -> "SuperNodeProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        node_config = (f'data-dir="{self.data_dir}" cache-dir="{self.state_dir / "cache"}" '
                       f'agent-name="{self.name}"')
        env = flower_env(self.state_dir / "flwr", self.bin_dir)
        env.update(self.extra_env or {})
        log = open(self.state_dir / "supernode.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "flower-supernode"), "--insecure", "--superlink", self.superlink,
             "--port", str(self.port), "--node-config", node_config],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        return self

    def stop(self, sig: int = 15) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
