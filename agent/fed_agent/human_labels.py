"""A person's label for a stored image: the one way an image without one gets a human label.

Why one function: `fed-agent label FILE LABEL` (a person, a script, the review page) and the
inbox (the same photo dropped into ``inbox/<label>/`` later) both label an image that is
unlabeled, pseudo-labeled or waiting for review, and a human label always wins: the image
moves from ``data/unlabeled/`` into ``data/<split>/<label>/`` (the split by the usual rule,
from its hash alone), its entry becomes a plain human-labeled one (the pseudo label or the
review item goes) and the change is logged with what the model had said. An image that has
a human label keeps it: changing a person's label is not this function's job.

`find_stored` turns what a person types (a path to the stored file, a path relative to
data/, or a SHA-256 or a unique prefix of at least 8 hex digits) into the image's hash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fed_common.store import IndexEntry, split_for

from .store_writer import free_name

_HEX_PREFIX = re.compile(r"^[0-9a-f]{8,64}$")


class LabelRefused(ValueError):
    """The image or the label cannot be used; the message says which and why."""


def apply_human_label(entries: dict[str, IndexEntry], data_dir: Path, sha: str, label: str, labels: list[str],
                      test_fraction: float, log) -> IndexEntry:
    """Give the stored image `sha` the human label `label` (inside StoreWriter.editing())."""
    if label not in labels:
        raise LabelRefused(f"unknown label {label!r} (labels: {', '.join(labels)})")
    entry = entries.get(sha)
    if entry is None:
        raise LabelRefused(f"no stored image has SHA-256 {sha}")
    if entry.status == "human":
        if entry.label == label:
            return entry
        raise LabelRefused(f"data/{entry.path} already has the human label {entry.label!r}")
    split = split_for(sha, test_fraction)
    folder = data_dir / split / label
    folder.mkdir(parents=True, exist_ok=True)
    dest = free_name(folder, Path(entry.path).name)
    os.replace(data_dir / entry.path, dest)
    labeled = IndexEntry(sha256=sha, label=label, split=split, size=dest.stat().st_size,
                         path=dest.relative_to(data_dir).as_posix())
    entries[sha] = labeled
    guess = entry.prediction
    log.info("image_labeled", sha256=sha, label=label, split=split, source=f"data/{entry.path}",
             destination=f"data/{labeled.path}", was=entry.status, model_label=guess.label if guess else None,
             model_confidence=guess.confidence if guess else None,
             model_version=guess.model_version if guess else None)
    return labeled


def find_stored(entries: dict[str, IndexEntry], data_dir: Path, file_or_sha: str) -> str:
    """The SHA-256 of the stored image a person named; LabelRefused naming the problem."""
    if _HEX_PREFIX.match(file_or_sha):
        matches = [sha for sha in entries if sha.startswith(file_or_sha)]
        if len(matches) > 1:
            raise LabelRefused(f"{file_or_sha} is the start of {len(matches)} stored images' SHA-256: give more of it")
        if matches:
            return matches[0]
    by_path = {(data_dir / entry.path).resolve(): sha for sha, entry in entries.items()}
    for candidate in (Path(file_or_sha), data_dir / file_or_sha):
        if candidate.resolve() in by_path:
            return by_path[candidate.resolve()]
    if Path(file_or_sha).is_file():
        raise LabelRefused(f"{file_or_sha} is not an image in the store ({data_dir}); a new photo goes into "
                           "the inbox's label folder instead")
    raise LabelRefused(f"{file_or_sha}: no such stored image (give its path under {data_dir} or its SHA-256)")
