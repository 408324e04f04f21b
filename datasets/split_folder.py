#!/usr/bin/env python3
"""Lay a labelled image folder out as per-client federated datasets.

Why: the demo (and every Pi camera agent) expects each client to own a disjoint slice of the
data in the seed layout ``dataset_clientN/{train,test}/<label>/`` plus a held-out server
test set ``dataset_server/test/<label>/``. Users usually have one folder per label instead;
this tool turns that into the federated layout, deterministically for a seed, so runs and
benchmarks are reproducible. Files are only ever *copied*: SRC belongs to the user.

Input:  ``SRC/<label>/*.{jpg,jpeg,png}`` (main case), or ``SRC/<split>/<label>/`` where every
top-level folder is a split name (train/test/val/validation); splits are then merged per label.

Usage:  python datasets/split_folder.py SRC OUT [--clients N] [--mode iid|skewed] ...
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
SPLIT_NAMES = {"train", "test", "val", "validation"}
MODES = ("iid", "skewed")


class SplitError(ValueError):
    """A user-facing problem with the inputs; the message names the offending path/label."""


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _is_split_layout(src: Path) -> bool:
    """True when SRC looks like SRC/<split>/<label>/ (all top dirs are split names)."""
    dirs = [d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(dirs) and all(d.name.lower() in SPLIT_NAMES for d in dirs) and all(
        any(c.is_dir() for c in d.iterdir()) for d in dirs)


def _images_in(folder: Path, skipped: list[str]) -> list[Path]:
    """Image files directly inside ``folder``; anything else is reported and skipped."""
    images = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            images.append(p)
        else:
            _warn(f"skipping non-image {'folder' if p.is_dir() else 'file'} {p}")
            skipped.append(str(p))
    return images


def scan(src: Path, labels: list[str] | None = None) -> tuple[dict[str, list[Path]], list[str]]:
    """Map label -> image paths (sorted, names unique per label) and list skipped entries."""
    if not src.is_dir():
        raise SplitError(f"source folder {src} does not exist or is not a folder")
    skipped: list[str] = []
    roots = [src]
    if _is_split_layout(src):
        roots = [d for d in sorted(src.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        for f in sorted(p for p in src.iterdir() if p.is_file()):
            _warn(f"skipping {f} (not inside a label folder)")
            skipped.append(str(f))
    found: dict[str, list[Path]] = {}
    for root in roots:
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                found.setdefault(entry.name, []).extend(_images_in(entry, skipped))
            else:
                _warn(f"skipping {entry} (not inside a label folder)")
                skipped.append(str(entry))
    if not found:
        raise SplitError(f"source folder {src} has no label folders (expected {src}/<label>/*.jpg)")
    if labels:
        missing = [lb for lb in labels if lb not in found]
        if missing:
            raise SplitError(f"label folder(s) {', '.join(missing)} not found in {src} "
                             f"(found: {', '.join(sorted(found))})")
        found = {lb: found[lb] for lb in labels}
    for label, paths in found.items():
        names = [p.name for p in paths]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SplitError(f"label {label!r}: file name(s) {', '.join(dupes)} occur in more "
                             f"than one split folder of {src}; names must be unique per label")
    return found, skipped


def _even(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal integers (larger ones first)."""
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


def _client_counts(n: int, clients: int, mode: str, label_idx: int, n_labels: int,
                   skew: float) -> list[int]:
    """How many of a label's ``n`` (non-server) images each client gets; every client >= 1."""
    if mode == "iid":
        return [len(range(k, n, clients)) for k in range(clients)]
    owners = [k for k in range(clients) if k % n_labels == label_idx]
    others = [k for k in range(clients) if k % n_labels != label_idx]
    if not owners or not others:  # nobody (or everybody) favours this label: spread evenly
        return _even(n, clients)
    own_total = min(max(round(n * skew), len(owners)), n - len(others))
    counts = [0] * clients
    for k, c in zip(owners, _even(own_total, len(owners))):
        counts[k] = c
    for k, c in zip(others, _even(n - own_total, len(others))):
        counts[k] = c
    return counts


def _test_count(m: int, test_fraction: float) -> int:
    """Test images out of a client's ``m``: >=1 train always, >=1 test when m >= 2."""
    if m < 2 or test_fraction <= 0:
        return 0
    return min(max(round(m * test_fraction), 1), m - 1)


def plan(found: dict[str, list[Path]], clients: int, mode: str, test_fraction: float,
         server_fraction: float, seed: int, skew: float) -> dict[tuple[str, str, str], list[Path]]:
    """Decide (folder, split, label) -> sources without touching the disk."""
    out: dict[tuple[str, str, str], list[Path]] = {}
    need = clients + (1 if server_fraction > 0 else 0)
    for idx, (label, paths) in enumerate(found.items()):
        n = len(paths)
        if n < need:
            raise SplitError(f"label {label!r} has {n} image(s) but at least {need} are needed "
                             f"({clients} client(s){' + server' if need > clients else ''})")
        order = list(paths)
        random.Random(f"{seed}/{label}").shuffle(order)  # str seed: stable across runs
        s = 0 if server_fraction <= 0 else min(max(round(n * server_fraction), 1), n - clients)
        if s:
            out[("dataset_server", "test", label)] = order[:s]
        rest = order[s:]
        if mode == "iid":
            shares = [rest[k::clients] for k in range(clients)]
        else:
            shares, start = [], 0
            for c in _client_counts(len(rest), clients, mode, idx, len(found), skew):
                shares.append(rest[start:start + c])
                start += c
        for k, share in enumerate(shares):
            t = _test_count(len(share), test_fraction)
            out[(f"dataset_client{k + 1}", "test", label)] = share[:t]
            out[(f"dataset_client{k + 1}", "train", label)] = share[t:]
    return out


def split_folder(src: str | Path, out: str | Path, clients: int = 2, mode: str = "iid",
                 test_fraction: float = 0.2, server_fraction: float = 0.1, seed: int = 0,
                 skew: float = 0.8, labels: list[str] | tuple[str, ...] | None = None) -> dict:
    """Copy SRC's labelled images into OUT's per-client layout; return a count summary."""
    src, out = Path(src), Path(out)
    if mode not in MODES:
        raise SplitError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if clients < 1:
        raise SplitError(f"clients must be >= 1, not {clients}")
    if not 0 <= test_fraction < 1 or not 0 <= server_fraction < 1 or not 0 <= skew <= 1:
        raise SplitError("test_fraction and server_fraction must be in [0, 1), skew in [0, 1]")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SplitError(f"output folder {out} already exists and is not empty; "
                         f"choose a new or empty folder")
    if src.is_dir() and out.resolve().is_relative_to(src.resolve()):
        raise SplitError(f"output folder {out} must not be inside the source folder {src}")
    found, skipped = scan(src, list(labels) if labels else None)
    layout = plan(found, clients, mode, test_fraction, server_fraction, seed, skew)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for (folder, split, label), paths in sorted(layout.items()):
        dest = out / folder / split / label
        dest.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy2(p, dest / p.name)
        counts.setdefault(folder, {}).setdefault(split, {})[label] = len(paths)
    return {"src": str(src), "out": str(out), "mode": mode, "clients": clients, "seed": seed,
            "labels": list(found), "total": sum(len(v) for v in found.values()),
            "skipped": skipped, "counts": counts}


def format_summary(summary: dict) -> str:
    """Human-readable table: one row per folder/split, one column per label."""
    labels = summary["labels"]
    width = max([len(lb) for lb in labels] + [6])
    lines = [f"{summary['total']} images -> {summary['out']} ({summary['mode']}, "
             f"{summary['clients']} clients, seed {summary['seed']})",
             f"{'':28}" + "".join(f"{lb:>{width + 2}}" for lb in labels)]
    for folder, splits in summary["counts"].items():
        for split, per_label in splits.items():
            lines.append(f"{folder + '/' + split:28}"
                         + "".join(f"{per_label.get(lb, 0):>{width + 2}}" for lb in labels))
    if summary["skipped"]:
        lines.append(f"skipped {len(summary['skipped'])} non-image entries (see warnings)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Copy SRC/<label>/*.jpg into OUT/dataset_clientN/{train,test}/<label>/ "
                    "plus OUT/dataset_server/test/<label>/ (SRC is never modified).")
    ap.add_argument("src", help="labelled folder: SRC/<label>/*.{jpg,jpeg,png}")
    ap.add_argument("out", help="new or empty output folder")
    ap.add_argument("--clients", type=int, default=2, help="number of clients (default 2)")
    ap.add_argument("--mode", choices=MODES, default="iid",
                    help="iid: round-robin per label; skewed: client i favours label i mod L")
    ap.add_argument("--test-fraction", type=float, default=0.2,
                    help="share of each client's images kept for its test split (default 0.2)")
    ap.add_argument("--server-fraction", type=float, default=0.1,
                    help="share of each label taken first for the server test set (default 0.1)")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    ap.add_argument("--skew", type=float, default=0.8,
                    help="skewed mode: share of a label given to the clients favouring it")
    ap.add_argument("--labels", nargs="+", help="use only these label folders, in this order")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    try:
        summary = split_folder(args.src, args.out, clients=args.clients, mode=args.mode,
                               test_fraction=args.test_fraction,
                               server_fraction=args.server_fraction, seed=args.seed,
                               skew=args.skew, labels=args.labels)
    except SplitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
