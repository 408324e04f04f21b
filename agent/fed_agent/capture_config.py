"""The agent's `capture:` section: when the camera takes frames, and with what command.

Why apart from config.py: the time-window parsing is the capture's own rule (capture.py reads
`active_minutes`), and the agent's schema module stays small.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fed_common.config import STRICT
from pydantic import BaseModel, Field, StringConstraints, field_validator


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Raspberry Pi OS bookworm's camera tool: one 1280x960 JPEG, no preview window, no delay.
RPICAM_STILL = ["rpicam-still", "--nopreview", "--immediate", "--width", "1280", "--height", "960",
                "--output", "{path}"]


class CaptureSection(BaseModel):
    model_config = STRICT
    enabled: bool = Field(False, description="Take a frame every interval_seconds into inbox/unlabeled/.")
    command: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=lambda: list(RPICAM_STILL), min_length=1,
        description="Program and arguments, run without a shell; {path} is replaced by the frame's file. "
        "The default is Raspberry Pi OS bookworm's rpicam-still (1280x960 JPEG, no preview).")
    interval_seconds: float = Field(60.0, ge=1, le=86400, description="Seconds between frames (1-86400).")
    active_hours: str = Field("00:00-24:00", description="Local time window HH:MM-HH:MM in which frames are "
                              "taken; it runs across midnight when the end is earlier (22:00-06:00).")
    days: list[Literal[DAYS]] = Field(default_factory=lambda: list(DAYS), min_length=1,
                                      description="Days frames are taken on (mon ... sun).")
    daily_cap: int = Field(1000, ge=1, le=100_000, description="At most this many frames a day.")
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="A command running longer is killed "
                                   "(and counts as a camera failure).")
    backoff_max_seconds: float = Field(900.0, ge=1, le=86400, description="After failures the delay "
                                       "doubles from interval_seconds up to this.")

    @field_validator("command")
    def _needs_path(cls, value: list[str]) -> list[str]:
        if not any("{path}" in arg for arg in value):
            raise ValueError("one argument must contain {path} (where the frame is written)")
        return value

    @field_validator("active_hours")
    def _check_hours(cls, value: str) -> str:
        _minutes(value)
        return value

    @property
    def active_minutes(self) -> tuple[int, int]:
        return _minutes(self.active_hours)


def _minutes(window: str) -> tuple[int, int]:
    """'06:00-20:00' -> (360, 1200); ValueError naming the problem."""
    try:
        start, end = (part.split(":") for part in window.split("-"))
        bounds = [int(start[0]) * 60 + int(start[1]), int(end[0]) * 60 + int(end[1])]
        minutes_ok = all(0 <= int(part[1]) < 60 for part in (start, end))
    except (ValueError, IndexError):
        raise ValueError(f"must be HH:MM-HH:MM (got {window!r})") from None
    if not minutes_ok or not all(0 <= bound <= 24 * 60 for bound in bounds) or bounds[0] == bounds[1]:
        raise ValueError(f"must be two different times of day, 00:00 to 24:00 (got {window!r})")
    return bounds[0], bounds[1]
