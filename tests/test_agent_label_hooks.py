"""inference.on_label: a site's command run for a predicted label, with the path, label and
score substituted, off the caller's thread; a hanging one is killed at its timeout (with what
it started) and the next one runs; beyond the bound, hooks are dropped with a warning."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from conftest import wait_for
from fed_agent.hooks import LabelHooks, substituted
from fed_agent.threads import drained
from field_models import Events, prediction


def write_argv_script(folder: Path) -> Path:
    """A hook program writing its arguments (one a line) to the file named first."""
    script = folder / "record.py"
    script.write_text("import sys\nopen(sys.argv[1], 'w').write('\\n'.join(sys.argv[2:]))\n")
    return script


def hook(command: list[str], timeout: float = 10.0):
    from fed_agent.config import LabelHook

    return LabelHook(command=command, timeout=timeout)


def test_label_hook_runs_with_the_substituted_arguments_off_the_callers_thread(tmp_path):
    out, script = tmp_path / "argv.txt", write_argv_script(tmp_path)
    hooks = LabelHooks({"hardhat": hook([sys.executable, str(script), str(out), "{label}", "p={path}",
                                         "{score}", "{other}"])}, Events())
    hooks.start()
    try:
        assert not hooks.offer(prediction("head", 0.9), "/data/a.jpg")  # no hook for head
        assert hooks.offer(prediction("hardhat", 0.87654), "/data/test/hardhat/0123.png")
        assert drained(hooks.queue, 30)
    finally:
        hooks.stop()
    assert out.read_text().splitlines() == ["hardhat", "p=/data/test/hardhat/0123.png", "0.8765", "{other}"]
    assert hooks.ran == 1 and hooks.failed == 0
    assert substituted(["{path}"], "/x/{label}.png", "head", 0.5) == ["/x/{label}.png"]  # one pass


def process_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_hanging_hook_is_killed_at_its_timeout_with_what_it_started_and_the_next_one_runs(tmp_path):
    pids, out, script = tmp_path / "pids", tmp_path / "argv.txt", write_argv_script(tmp_path)
    hang = tmp_path / "hang.py"
    hang.write_text("import os, subprocess, sys, time\n"
                    "child = subprocess.Popen(['sleep', '600'])\n"
                    f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
                    "time.sleep(600)\n")
    events = Events()
    hooks = LabelHooks({"head": hook([sys.executable, str(hang)], timeout=1.5),
                        "hardhat": hook([sys.executable, str(script), str(out), "{label}"]),
                        "cap": hook([sys.executable, "-c", "import sys; sys.exit(3)"])}, events)
    hooks.start()
    try:
        started = time.monotonic()
        for label in ("head", "cap", "hardhat"):
            hooks.offer(prediction(label, 0.9), "/data/x.png")
        assert drained(hooks.queue, 60)
        took = time.monotonic() - started
    finally:
        hooks.stop()
    assert out.read_text() == "hardhat"  # the hooks after the hanging one ran
    timeout, = events.named("label_hook_timeout")
    assert timeout["command"] == sys.executable and timeout["timeout"] == 1.5 and 1.5 <= took < 20
    failed, = events.named("label_hook_failed")
    assert failed["exit_status"] == 3 and failed["command"] == sys.executable
    for pid in map(int, pids.read_text().split()):  # the hook and the child it started
        wait_for(lambda: process_gone(pid), 10, interval=0.1, what=f"hook process {pid} killed")


def test_hooks_beyond_the_bound_are_dropped_with_a_warning(tmp_path):
    events = Events()
    hooks = LabelHooks({"head": hook(["/bin/true"])}, events, max_pending=2)  # not started: nothing drains
    offered = [hooks.offer(prediction("head", 0.9), "/x.png") for _ in range(4)]
    assert offered == [True, True, False, False] and hooks.dropped == 2
    assert len(events.named("label_hook_dropped")) == 2
    missing = LabelHooks({}, events).run_hook([str(Path("/nonexistent/alert"))], 5)
    assert missing is None and "cannot start" in events.named("label_hook_failed")[-1]["error"]
