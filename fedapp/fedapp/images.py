"""Read a labeled image folder the way every part of the product does.

One decoder for training, server evaluation and `fedctl predict`, so pixels always match:
Pillow decode -> RGB -> bilinear resize to 160x160 -> float32 in [0, 255]. Whether bytes are
an image at all is decided by `fed_common.images` alone, the check the agent's inbox uses,
so a file is never accepted on one side and refused on the other.
Files that cannot be used are skipped and reported by name, never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fed_common.files import sha256_bytes
from fed_common.images import ImageRejected, image_problem, open_image
from PIL import Image

IMAGE_SIZE = 160
log = logging.getLogger("fedapp.images")


@dataclass
class LabeledFile:
    """An image to train or evaluate on: label is the index into the run's labels."""

    path: Path
    label: int
    data: bytes
    digest: str


@dataclass
class FolderScan:
    files: list[LabeledFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode bytes to a (160, 160, 3) float32 RGB array; ValueError names the source."""
    try:
        with open_image(data) as img:
            rgb = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    except ImageRejected as exc:
        raise ValueError(f"{source}: {exc}") from None
    return np.asarray(rgb, dtype=np.float32)


def load_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    return decode_image(path.read_bytes(), str(path))


def check_label_folders(folder: Path, labels: list[str]) -> None:
    """Fail early when the labels do not match the folder's label subfolders."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [label for label in labels if label not in present]
    extra = [name for name in present if name not in labels]
    if missing or extra:
        raise ValueError(
            f"labels {labels} do not match the folders in {folder}: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )


def unknown_label_folders(folder: str | Path, labels: list[str]) -> list[tuple[str, str]]:
    """(folder, reason) for each label folder under `folder` that is not a configured label."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [(str(sub), f"unknown label folder (labels are {labels})")
            for sub in sorted(folder.iterdir())
            if sub.is_dir() and not sub.name.startswith(".") and sub.name not in labels]


def scan_folder(folder: str | Path, labels: list[str]) -> FolderScan:
    """List `folder/<label>/*` and read each file; unreadable images are reported, not used."""
    folder = Path(folder)
    scan = FolderScan(skipped=unknown_label_folders(folder, labels))
    if not folder.is_dir():
        return scan
    for index, label in enumerate(labels):
        label_dir = folder / label
        if not label_dir.is_dir():
            continue
        for path in sorted(label_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            data = path.read_bytes()
            reason = image_problem(data)
            if reason:
                log.warning("skipping %s: %s", path, reason)
                scan.skipped.append((str(path), reason))
                continue
            scan.files.append(LabeledFile(path, index, data, sha256_bytes(data)))
    return scan
