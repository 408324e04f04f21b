"""The offline wheelhouse the system test's hosts install from (packaging/build_wheelhouse.sh).

Why a wrapper: the hosts have no network, so every wheel must come from here, and a cold
build downloads TensorFlow and friends (~450 MB). The project's own wheels (fed-common,
fedapp, agent, coordinator) and the app archive are always rebuilt, because they are what
is under test. The dependencies are only downloaded again when what pins them changed:
otherwise the script runs with pip pointed at the previous wheelhouse and no index
(PIP_NO_INDEX), so it re-resolves the same pins offline in seconds. If that fails (a new dependency), it falls
back to a normal build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packaging" / "build_wheelhouse.sh"
PINS = ("packaging/constraints-agent.txt", "packaging/constraints-coordinator.txt",
        "packaging/build_wheelhouse.sh", "agent/pyproject.toml", "coordinator/pyproject.toml",
        "fedapp/pyproject.toml", "common/pyproject.toml")
PARTS = ("agent", "coordinator")


def deps_key() -> str:
    digest = hashlib.sha256()
    for rel in PINS:
        path = REPO / rel
        digest.update(rel.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    return digest.hexdigest()[:16]


def _run_script(out: Path, env: dict, log_file: Path) -> subprocess.CompletedProcess:
    with open(log_file, "w") as fh:
        return subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, stdout=fh,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=1800)


def build(out: Path, log=print) -> Path:
    """(Re)build `out`; returns it. Raises with the script's output tail on failure."""
    out.mkdir(parents=True, exist_ok=True)
    key, stamp = deps_key(), out / ".deps-key"
    complete = all((out / p).is_dir() and any((out / p).glob("*.whl")) for p in PARTS)
    warm = complete and stamp.is_file() and stamp.read_text().strip() == key
    log_file = out.parent / "wheelhouse-build.log"
    start = time.monotonic()
    proc = None
    if warm:
        # The old folders stay in place until the script swaps in the new ones, so pip can
        # read the pinned dependency wheels from them (never from the network).
        cache = out.parent / "wheelhouse-deps"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        for part in PARTS:
            for whl in (out / part).glob("*.whl"):
                if not whl.name.startswith(("fed_agent-", "fed_coordinator-", "fedapp-", "fed_common-")):
                    target = cache / whl.name
                    if not target.exists():
                        os.link(whl, target)
        env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(cache))
        proc = _run_script(out, env, log_file)
        shutil.rmtree(cache, ignore_errors=True)
        if proc.returncode != 0:
            log("wheelhouse: offline rebuild failed, building online (see wheelhouse-build.log)")
    if proc is None or proc.returncode != 0:
        stamp.unlink(missing_ok=True)
        proc = _run_script(out, dict(os.environ), log_file)
        if proc.returncode != 0:
            raise RuntimeError(f"{SCRIPT.relative_to(REPO)} failed ({proc.returncode}):\n"
                               + log_file.read_text(errors="replace")[-4000:])
        stamp.write_text(key + "\n")
        warm = False
    log(f"wheelhouse: {'dependencies reused, project rebuilt' if warm else 'full build'} in "
        f"{time.monotonic() - start:.0f}s ({out})")
    return out
