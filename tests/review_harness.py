"""A real agent store with a review queue, and `fed-agent review` running on it.

The store is made by the agent's own code (the Inbox files the frames from inbox/unlabeled/,
the PseudoLabeler sends each to review with the model's guess), so the page reads exactly
what a Pi holds; the page is the installed console script from the agent venv.
"""

from __future__ import annotations

import io
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from PIL import Image, ImageDraw

from agent_harness import AGENT_BIN, token_file, write_config
from conftest import free_port, read_json_lines, wait_for
from fed_common.store import ImageStore, IndexEntry
from fed_demo.services import stop_process_group
from field_models import prediction
from test_agent_pseudo_labels import file_images, labeler_for, make_inbox

# (the model's guess, its confidence) of each frame, in the order they are filed.
GUESSES = [("head", 0.81), ("hardhat", 0.42), ("head", 0.66), ("hardhat", 0.55), ("head", 0.73)]
TEST_FRACTION = 0.5


def scene(i: int) -> bytes:
    """A 320x240 camera-like frame: a coloured background and a figure, different for each i."""
    img = Image.new("RGB", (320, 240), (40 + 40 * i % 200, 90 + 30 * i % 150, 160 - 25 * i % 140))
    draw = ImageDraw.Draw(img)
    draw.ellipse((100 + 10 * i, 50, 200 + 10 * i, 150), fill=(230, 200 - 30 * i % 200, 60))
    draw.rectangle((120 + 10 * i, 150, 180 + 10 * i, 230), fill=(30, 30, 30 + 40 * i % 200))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def review_store(state: Path, guesses=GUESSES) -> list[IndexEntry]:
    """Three human labels per class and one review item per guess; the review entries, in
    the order of `guesses`."""
    inbox = make_inbox(state, test_fraction=TEST_FRACTION)
    file_images(state, inbox, "head", [scene(50 + i) for i in range(3)], "h")
    file_images(state, inbox, "hardhat", [scene(60 + i) for i in range(3)], "hh")
    frames = file_images(state, inbox, "unlabeled", [scene(i) for i in range(len(guesses))])
    labeler = labeler_for(inbox)
    decided = [labeler.decide(e.sha256, prediction(label, confidence, version=2))
               for e, (label, confidence) in zip(frames, guesses)]
    inbox.flush()
    assert [e.status for e in decided] == ["review"] * len(guesses)
    return decided


def index(state: Path) -> dict[str, IndexEntry]:
    return {e.sha256: e for e in ImageStore(state / "data").read_index().images}


def all_files(state: Path) -> dict[str, bytes]:
    """Every file under the state folder by its relative path (what a change would show)."""
    return {p.relative_to(state).as_posix(): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}


class ReviewPage:
    """`fed-agent -c CONFIG review ...` as a process, answering on `url`."""

    def __init__(self, tmp_path: Path, state: Path, *args: str, host: str = "127.0.0.1",
                 config: Optional[Path] = None, **review) -> None:
        self.port = free_port()
        self.config = config or write_config(
            tmp_path / "agent.yaml", state, "127.0.0.1:9", "http://127.0.0.1:9/api/v1/heartbeat", token_file(tmp_path),
            9999, inbox__test_fraction=TEST_FRACTION, **{f"review__{key}": value for key, value in review.items()})
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = tmp_path / "review.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(AGENT_BIN / "fed-agent"), "-c", str(self.config), "review",
                                          "--host", host, "--port", str(self.port), *args],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._listening, 60, 0.1, "the review page to answer")

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        return any(e.get("event") == "review_page_started" for e in self.events())

    def events(self) -> list[dict]:
        return read_json_lines(self.log_path)

    def stop(self) -> int:
        stop_process_group(self.proc, grace=20)
        return self.proc.returncode


def get(url: str, headers: Optional[dict] = None, data: Optional[bytes] = None):
    """(status, headers, body) of one request, redirects not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()
