"""The inbox against hostile or unlucky input: pixel bombs, hard links, a folder swapped for
a symlink mid-scan, and stale temp files. Nothing outside the state folder is ever moved."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import fed_agent.inbox as inbox_module
import fed_common.store as store_module
from conftest import AGENT_PYTHON, needs_agent_venv
from test_agent_inbox import LABELS, NOW, drop, jpeg, make_inbox


def bomb_png(side: int = 10000) -> bytes:
    """A 10000x10000 one-colour PNG: a few hundred KB on disk, 100 MP (and more RAM) decoded."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def reasons(state: Path) -> dict[str, str]:
    return {p.name.removesuffix(".reason.json"): json.loads(p.read_text())["reason"]
            for p in (state / "quarantine").rglob("*.reason.json")}


def test_a_pixel_bomb_is_quarantined_from_its_header(tmp_path):
    state = tmp_path / "state"
    drop(state, "head/bomb.png", bomb_png())
    drop(state, "head/wide.png", bomb_png(7000))  # 49 MP: under Pillow's warning, over max_pixels
    report = make_inbox(state).ingest()
    assert not report.accepted and len(report.quarantined) == 2
    found = reasons(state)
    assert found["bomb.png"].startswith("image too large") and "100000000 pixels" in found["bomb.png"]
    assert found["wide.png"] == "image too large (7000x7000 = 49.0 MP > max 40.0 MP)"


@needs_agent_venv
def test_agent_peak_rss_stays_small_while_it_refuses_a_pixel_bomb(tmp_path):
    """Measured in the agent's own environment: the whole process's high-water mark."""
    state = tmp_path / "state"
    bomb = bomb_png()
    drop(state, "head/bomb.png", bomb)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking (pytest) process
    script = ("import re, sys\n"
              "from fed_agent.inbox import Inbox\n"
              "r = Inbox(sys.argv[1], ['head', 'hardhat'], settle_seconds=0).ingest()\n"
              "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
              "print(len(r.quarantined), hwm)\n")
    out = subprocess.run([str(AGENT_PYTHON), "-c", script, str(state)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()[-1].split()
    quarantined, peak_kib = int(out[0]), int(out[1])
    print(f"[inbox] {len(bomb)} byte 10000x10000 PNG refused; agent peak RSS {peak_kib / 1024:.1f} MiB")
    assert quarantined == 1 and peak_kib < 100 * 1024, peak_kib


def test_a_hard_link_to_a_file_outside_is_quarantined_not_stored(tmp_path):
    state, outside = tmp_path / "state", tmp_path / "outside.jpg"
    outside.write_bytes(jpeg(3))
    make_inbox(state)  # creates the label folders
    os.link(outside, state / "inbox" / "head" / "linked.jpg")
    os.utime(state / "inbox" / "head" / "linked.jpg", (NOW - 3600, NOW - 3600))
    report = make_inbox(state).ingest()
    assert not report.accepted and "hard link" in reasons(state)["linked.jpg"]
    assert outside.read_bytes() == jpeg(3)
    assert not list((state / "data").rglob("*.jpg"))


def test_a_folder_swapped_for_a_symlink_mid_scan_moves_nothing_from_outside(tmp_path, monkeypatch):
    state, outside = tmp_path / "state", tmp_path / "outside"
    outside.mkdir()
    (outside / "a.jpg").write_bytes(b"the user's own file, not for the fleet")
    sub = drop(state, "head/sub/a.jpg", jpeg(1)).parent
    inbox = make_inbox(state)
    real_check = inbox_module.image_problem

    def swap_then_check(data, *args):
        # the race point: after the inbox listed and read sub/a.jpg, before it moves it
        if sub.is_dir() and not sub.is_symlink():
            sub.rename(sub.with_name("sub-was"))
            sub.symlink_to(outside)
        return real_check(data, *args)

    monkeypatch.setattr(inbox_module, "image_problem", swap_then_check)
    report = inbox.ingest()
    assert sub.is_symlink()  # the swap really happened
    assert (outside / "a.jpg").read_bytes() == b"the user's own file, not for the fleet"
    assert len(report.accepted) == 1  # the file it read, from the folder it had open
    stored = list((state / "data").rglob("*.jpg"))
    assert len(stored) == 1 and stored[0].read_bytes() == jpeg(1)


def test_stale_temp_files_of_interrupted_writes_are_removed_at_start(tmp_path):
    state = tmp_path / "state"
    make_inbox(state)
    stale = state / "data" / ".index.json.abcd1234.tmp"
    stale.write_text("half an index")
    users = drop(state, "head/.camera.abcd1234.tmp", b"still being written by the camera")
    make_inbox(state)
    assert not stale.exists() and users.exists()


def test_a_quarantine_note_that_cannot_be_written_leaves_the_file_in_the_inbox(tmp_path, monkeypatch):
    state = tmp_path / "state"
    bad = drop(state, "head/broken.jpg", b"not an image")
    inbox = make_inbox(state)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inbox_module, "atomic_write", no_space)  # every write the inbox makes
    monkeypatch.setattr(store_module, "atomic_write", no_space)
    report = inbox.ingest()
    assert not report.quarantined and bad.exists()
    assert inbox.storage_problem.startswith("disk full")
    assert not [p for p in (state / "quarantine").rglob("*") if p.is_file()]
    monkeypatch.undo()
    inbox.ingest()
    assert inbox.storage_problem is None and not bad.exists()
    assert "not a readable image" in reasons(state)["broken.jpg"]


@pytest.mark.parametrize("label", LABELS)
def test_ordinary_images_still_go_in(tmp_path, label):
    state = tmp_path / "state"
    drop(state, f"{label}/ok.jpg", jpeg(7))
    assert len(make_inbox(state).ingest().accepted) == 1
