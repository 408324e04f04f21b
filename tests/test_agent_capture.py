"""Camera capture: real JPEGs from a stand-in command land whole in inbox/unlabeled/; a failing,
hanging or silent camera is reported and retried with backoff, never fatal."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import structlog
from PIL import Image

from conftest import PHOTOS, needs_shared
from fed_agent.capture import Camera
from fed_agent.config import CaptureSection

pytestmark = needs_shared
STANDIN = Path(__file__).with_name("camera_standin.py")


def settings(control: Path, **overrides) -> CaptureSection:
    return CaptureSection(enabled=True, command=[sys.executable, str(STANDIN), str(PHOTOS / "dataset_client1" / "train"),
                                                 str(control), "{path}"],
                          interval_seconds=10, **overrides)


def camera(tmp_path: Path, clock=None, **overrides) -> Camera:
    control = tmp_path / "control"
    control.mkdir(parents=True, exist_ok=True)
    return Camera(settings(control, **overrides), tmp_path / "inbox" / "unlabeled", structlog.get_logger(),
                  **({"clock": clock} if clock else {}))


def test_frames_arrive_whole_under_their_final_name(tmp_path):
    cam = camera(tmp_path)
    assert cam.take_frame() and cam.take_frame()
    frames = sorted((tmp_path / "inbox" / "unlabeled").iterdir())
    assert [f.name.startswith("frame-") and f.suffix == ".jpg" for f in frames] == [True, True]
    for frame in frames:
        with Image.open(frame) as image:
            image.verify()  # a real, complete JPEG
    status = cam.status()
    assert status.state == "ok" and status.frames_today == 2 and status.last_frame_at is not None


def test_a_failing_camera_is_reported_backs_off_and_recovers(tmp_path):
    cam = camera(tmp_path, backoff_max_seconds=60)
    (tmp_path / "control" / "fail").touch()
    assert not cam.take_frame() and not cam.take_frame()
    status = cam.status()
    assert status.state == "failing" and "exited 1: ERROR: *** no cameras available ***" in status.last_error
    assert cam.next_delay(False) == 40 and not list((tmp_path / "inbox" / "unlabeled").iterdir())
    cam.failures = 10
    assert cam.next_delay(False) == 60  # at most backoff_max_seconds
    (tmp_path / "control" / "fail").unlink()
    assert cam.take_frame() and cam.status().state == "ok" and cam.status().last_error is not None


def test_a_hanging_or_silent_camera_leaves_no_partial_frame(tmp_path):
    cam = camera(tmp_path, timeout_seconds=1)
    (tmp_path / "control" / "hang").touch()
    assert not cam.take_frame()
    assert "did not finish within 1 s" in cam.status().last_error
    (tmp_path / "control" / "hang").unlink()
    (tmp_path / "control" / "empty").touch()
    assert not cam.take_frame() and "wrote no image" in cam.status().last_error
    assert not list((tmp_path / "inbox" / "unlabeled").iterdir())  # not even a hidden temp file


def test_active_hours_days_and_the_daily_cap(tmp_path):
    monday_noon = datetime(2026, 11, 30, 12, 0).timestamp()
    now = [monday_noon]
    cam = camera(tmp_path, clock=lambda: now[0], active_hours="06:00-20:00", days=["mon", "tue"], daily_cap=2)
    assert cam.due()
    now[0] = datetime(2026, 11, 30, 21, 0).timestamp()
    assert not cam.due()  # after hours
    now[0] = datetime(2026, 12, 2, 12, 0).timestamp()
    assert not cam.due()  # a Wednesday
    now[0] = monday_noon
    assert cam.take_frame() and cam.take_frame() and not cam.due()  # the cap
    now[0] = datetime(2026, 12, 1, 12, 0).timestamp()
    assert cam.due() and cam.frames_today == 0  # a new day
    night = camera(tmp_path / "n", clock=lambda: datetime(2026, 11, 30, 2, 0).timestamp(), active_hours="22:00-06:00")
    assert night.due()  # a window across midnight
