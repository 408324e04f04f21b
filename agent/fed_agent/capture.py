"""Camera capture: a frame every `capture.interval_seconds` into ``inbox/unlabeled/``.

Why a command and not a camera library: on Raspberry Pi OS bookworm the camera stack is
libcamera, driven by `rpicam-still` (the documented default below); a site with another
camera (a USB webcam through `fswebcam`, a script) only changes the command. It runs with no
shell, `{path}` replaced by the frame's file, within `capture.timeout_seconds`.

A frame is written under a hidden name (the inbox ignores names starting with ``.``) and
renamed into ``inbox/unlabeled/`` only when the command succeeded and left a non-empty file,
so the inbox never sees half a JPEG. Frames are taken only in the active hours and days and
up to `capture.daily_cap` a day. A failing camera (the command fails, times out, or writes
nothing) is logged, reported in the heartbeat (`camera`: failing since when, the last error)
and retried with a doubling delay up to `capture.backoff_max_seconds`; it never stops the
agent.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

from fed_common.heartbeat import CameraStatus

ERROR_MAX = 300  # CameraStatus.last_error's bound


class Camera(threading.Thread):
    def __init__(self, settings, unlabeled_dir: Path, log, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="capture", daemon=True)
        self.settings, self.folder, self.log, self.clock = settings, Path(unlabeled_dir), log, clock
        self.stop_event = threading.Event()
        self.frames_today, self.day = 0, ""
        self.failing_since: Optional[float] = None
        self.last_error: Optional[str] = None
        self.last_frame_at: Optional[float] = None
        self.failures = 0

    # -- what the heartbeat says -------------------------------------------------------------
    def status(self) -> CameraStatus:
        state = "failing" if self.failing_since is not None else "ok"
        return CameraStatus(state=state, failing_since=self.failing_since, last_error=self.last_error,
                            frames_today=self.frames_today, last_frame_at=self.last_frame_at)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop_event.is_set():
            delay = self.settings.interval_seconds
            if self.due():
                try:
                    ok = self.take_frame()
                except OSError as exc:  # the inbox folder itself (permissions, a full disk)
                    self._failed(f"cannot write the frame: {exc}")
                    ok = False
                delay = self.next_delay(ok)
            self.stop_event.wait(delay)

    def due(self) -> bool:
        """In the active hours and days, under today's cap."""
        now = self._roll_day()
        if now.strftime("%a").lower()[:3] not in self.settings.days:
            return False
        start, end = self.settings.active_minutes
        minute = now.hour * 60 + now.minute
        in_hours = start <= minute < end if start <= end else (minute >= start or minute < end)
        return in_hours and self.frames_today < self.settings.daily_cap

    def _roll_day(self) -> datetime:
        """Now; the daily count starts again on a new (local) day."""
        now = datetime.fromtimestamp(self.clock())
        if now.strftime("%Y-%m-%d") != self.day:
            self.day, self.frames_today = now.strftime("%Y-%m-%d"), 0
        return now

    def next_delay(self, ok: bool) -> float:
        if ok:
            return self.settings.interval_seconds
        return min(self.settings.backoff_max_seconds, self.settings.interval_seconds * 2 ** min(self.failures, 20))

    def take_frame(self) -> bool:
        """One frame; True if it reached the inbox."""
        # The random part: two frames never share a name, even if the clock was set back.
        stamp = f"{datetime.fromtimestamp(self.clock()).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        hidden, final = self.folder / f".frame-{stamp}.jpg", self.folder / f"frame-{stamp}.jpg"
        problem = self._run_command(hidden)
        if problem is None and (not hidden.is_file() or hidden.stat().st_size == 0):
            problem = "the command exited 0 but wrote no image"
        if problem is not None:
            hidden.unlink(missing_ok=True)
            self._failed(problem)
            return False
        os.replace(hidden, final)
        self._roll_day()
        self.frames_today += 1
        self.last_frame_at = self.clock()
        if self.failing_since is not None:
            self.log.info("camera_recovered", failing_since=self.failing_since, failures=self.failures)
        self.failing_since, self.failures = None, 0
        self.log.info("frame_captured", file=final.name, frames_today=self.frames_today)
        return True

    def _run_command(self, path: Path) -> Optional[str]:
        argv = [arg.replace("{path}", str(path)) for arg in self.settings.command]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return f"cannot run {argv[0]}: {exc.strerror or exc}"
        try:
            _, stderr = proc.communicate(timeout=self.settings.timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # what it started goes too
            proc.communicate()
            return f"{argv[0]} did not finish within {self.settings.timeout_seconds:g} s"
        if proc.returncode != 0:
            last = (stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
            return f"{argv[0]} exited {proc.returncode}: {last[0]}".rstrip(": ")
        return None

    def _failed(self, problem: str) -> None:
        self.failures += 1
        self.last_error = problem[:ERROR_MAX]
        if self.failing_since is None:
            self.failing_since = self.clock()
        self.log.warning("camera_failed", error=self.last_error, failures=self.failures,
                         retry_in=self.next_delay(False))
