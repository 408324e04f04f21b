"""``<state_dir>/predictions.jsonl``: one JSON line per image the running model classified.

Why a file of its own (and not only log lines): it is what a site keeps to look back at what
the camera saw and what the model said (sha256, where the photo is stored, the label, the
score, the model version, the human label when the photo came in labeled), readable with
`jq` without journald. It is rotated like logging.handlers.RotatingFileHandler: when a line
would take it past `max_bytes`, ``predictions.jsonl`` becomes ``.1``, ``.1`` becomes ``.2``...
and the oldest beyond `keep` is dropped, so it never fills the SD card.

A write that fails (disk full, a read-only state folder) is logged, once until writes work
again, and never raised: the image is already filed, and the prediction still counts in
the heartbeat.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

PREDICTIONS_FILE = "predictions.jsonl"


class PredictionLog:
    def __init__(self, path: str | Path, max_bytes: int, keep: int, log) -> None:
        if max_bytes < 1 or keep < 1:
            raise ValueError(f"max_bytes and keep must be >= 1 (got {max_bytes}, {keep})")
        self.path, self.max_bytes, self.keep, self.log = Path(path), max_bytes, keep, log
        self.problem: Optional[str] = None  # set while writes fail
        self.failures = 0

    def rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def files(self) -> list[Path]:
        """The current file and the rotated ones that exist, newest first."""
        return [p for p in [self.path, *(self.rotated(n) for n in range(1, self.keep + 1))] if p.exists()]

    def append(self, row: dict) -> bool:
        """Add one line; False (logged) when it could not be written."""
        line = (json.dumps(row, separators=(",", ":"), sort_keys=True) + "\n").encode()
        try:
            self._rotate_for(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)
            try:
                os.write(fd, line)  # one write of one line: a reader never sees half of it
            finally:
                os.close(fd)
        except OSError as exc:
            self.failures += 1
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self.problem:
                self.log.error("predictions_write_failed", file=str(self.path), error=problem)
            self.problem = problem
            return False
        if self.problem:
            self.log.info("predictions_write_recovered", file=str(self.path), was=self.problem)
            self.problem = None
        return True

    def _rotate_for(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        for n in range(self.keep - 1, 0, -1):  # .keep is overwritten: the oldest goes
            if self.rotated(n).exists():
                os.replace(self.rotated(n), self.rotated(n + 1))
        os.replace(self.path, self.rotated(1))
