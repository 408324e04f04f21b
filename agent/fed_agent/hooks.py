"""``inference.on_label``: a site's command run when the model predicts a label (an alert).

The command is a list run without a shell; ``{path}`` (the stored photo), ``{label}`` and
``{score}`` are replaced in each argument in one pass (a path holding ``{label}`` stays as
it is, and no other brace is touched). Hooks run one at a time on their own thread, never on
the inbox's or the inference worker's: a slow hook delays only the hooks after it, and at
most `max_pending` wait; beyond that a hook is dropped with a warning rather than piling up
without limit. A hook that overruns its timeout is killed with its whole process group
(what it started too); a timeout, a non-zero exit or a program that cannot be started is
logged with the command's name and exit status, and the agent goes on.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from .classifier import Prediction
from .threads import ContextThread

_PLACEHOLDER = re.compile(r"\{(path|label|score)\}")
STDERR_TAIL = 300


def substituted(command: list[str], path: str, label: str, score: float) -> list[str]:
    values = {"path": path, "label": label, "score": f"{score:.4f}"}
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in command]


class LabelHooks(ContextThread):
    def __init__(self, hooks: dict, log, max_pending: int = 16) -> None:
        """`hooks`: label -> an object with `command` (list) and `timeout` (config LabelHook)."""
        super().__init__(name="label-hooks")
        self.hooks, self.log = dict(hooks), log
        self.queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.ran = self.failed = self.dropped = 0

    def offer(self, prediction: Prediction, path: str | Path) -> bool:
        """Queue the label's hook, if it has one; False when none or dropped (queue full)."""
        hook = self.hooks.get(prediction.label)
        if hook is None:
            return False
        args = substituted(list(hook.command), str(path), prediction.label, prediction.confidence)
        try:
            self.queue.put_nowait((args, hook.timeout))
        except queue.Full:
            self.dropped += 1
            self.log.warning("label_hook_dropped", command=args[0], label=prediction.label,
                             pending=self.queue.qsize(), dropped=self.dropped)
            return False
        return True

    def work(self) -> None:
        while not self.stop_event.is_set():
            try:
                args, timeout = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.run_hook(args, timeout)
            except Exception as exc:  # noqa: BLE001 - a hook must never end the thread
                self.failed += 1
                self.log.error("label_hook_failed", command=args[0], error=f"{type(exc).__name__}: {exc}")
            finally:
                self.queue.task_done()

    def run_hook(self, args: list[str], timeout: float) -> Optional[int]:
        """Run one command; its exit status (None when it could not start or timed out)."""
        started = time.monotonic()
        with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty hook cannot fill memory
            try:
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True, close_fds=True)
            except OSError as exc:
                self.failed += 1
                self.log.error("label_hook_failed", command=args[0], error=f"cannot start: {exc.strerror or exc}")
                return None
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                self.failed += 1
                self.log.error("label_hook_timeout", command=args[0], timeout=timeout, exit_status=proc.returncode,
                               pid=proc.pid)
                return None
            seconds = round(time.monotonic() - started, 3)
            if status != 0:
                self.failed += 1
                self.log.error("label_hook_failed", command=args[0], exit_status=status, seconds=seconds,
                               stderr=_tail(err))
            else:
                self.ran += 1
                self.log.info("label_hook_ran", command=args[0], seconds=seconds)
            return status


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the hook and whatever it started
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(fh) -> str:
    fh.seek(0, os.SEEK_END)
    fh.seek(max(0, fh.tell() - STDERR_TAIL))
    return fh.read().decode(errors="replace").strip()
