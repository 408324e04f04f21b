"""Worker threads that log with their creator's context.

Why: structlog's bound context (the agent's name, bound once in cli.py) lives in
contextvars, and a new thread starts with an empty context, so lines logged from a worker
would not name the agent. A `ContextThread` runs its target inside a copy of the context it
was created in.
"""

from __future__ import annotations

import contextvars
import queue
import threading


class ContextThread(threading.Thread):
    """A daemon thread whose `work()` runs in the creating thread's logging context."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._context = contextvars.copy_context()
        self.stop_event = threading.Event()

    def run(self) -> None:
        self._context.run(self.work)

    def work(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:
        self.stop_event.set()


def drained(work: queue.Queue, timeout: float) -> bool:
    """Wait until every item put on `work` is done (task_done); False at the deadline."""
    with work.all_tasks_done:
        return work.all_tasks_done.wait_for(lambda: work.unfinished_tasks == 0, timeout)
