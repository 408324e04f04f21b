"""A camera stand-in for the capture tests: `camera_standin.py SOURCE CONTROL PATH`.

Writes the next real JPEG of SOURCE (in name order, round and round) to PATH, as
`rpicam-still --output PATH` would. Fails on demand: while CONTROL/fail exists it prints a
libcamera-like error and exits 1; while CONTROL/hang exists it never finishes; while
CONTROL/empty exists it exits 0 without writing anything.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path


def main(source: str, control: str, path: str) -> int:
    control_dir = Path(control)
    if (control_dir / "fail").exists():
        print("ERROR: *** no cameras available ***", file=sys.stderr)
        return 1
    if (control_dir / "hang").exists():
        time.sleep(3600)
    if (control_dir / "empty").exists():
        return 0
    photos = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    counter = control_dir / "taken"
    taken = int(counter.read_text()) if counter.exists() else 0
    shutil.copyfile(photos[taken % len(photos)], path)
    counter.write_text(str(taken + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
