"""Read a labeled image folder the way every part of the product does.

One decoder for training, server evaluation and `fedctl predict`, so pixels always match:
Pillow decode -> RGB -> bilinear resize to 160x160 -> float32 in [0, 255].
Files that cannot be used are skipped and reported by name, never silently dropped.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SIZE = 160
log = logging.getLogger("fedapp.images")


@dataclass
class LabeledFile:
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
    if not data:
        raise ValueError(f"{source}: empty file")
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    except UnidentifiedImageError as exc:
        raise ValueError(f"{source}: not a readable image (unknown format)") from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{source}: not a readable image ({exc})") from exc
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


def scan_folder(folder: str | Path, labels: list[str]) -> FolderScan:
    """List `folder/<label>/*` and read each file; unreadable images are reported, not used."""
    folder = Path(folder)
    scan = FolderScan()
    if not folder.is_dir():
        return scan
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and not sub.name.startswith(".") and sub.name not in labels:
            scan.skipped.append((str(sub), f"unknown label folder (labels are {labels})"))
    for index, label in enumerate(labels):
        label_dir = folder / label
        if not label_dir.is_dir():
            continue
        for path in sorted(label_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            data = path.read_bytes()
            try:
                decode_image(data, str(path))
            except ValueError as exc:
                reason = str(exc).split(": ", 1)[-1]
                log.warning("skipping %s: %s", path, reason)
                scan.skipped.append((str(path), reason))
                continue
            scan.files.append(LabeledFile(path, index, data, hashlib.sha256(data).hexdigest()))
    return scan
