#!/usr/bin/env python3
"""Generate a small synthetic head-vs-hardhat image set, fully offline.

Why: tests, CI and first-time demos need labelled pictures without downloading anything or
shipping real photos of people. Each picture is a cluttered background with a cartoon
person (skin-tone face, eyes, neck, shirt); "head" wears a dark/brown hair cap, "hardhat" a
bright dome with a brim. The cue is a large, high-contrast shape/colour difference at the
top of the head, which a frozen ImageNet MobileNetV2 plus a small dense head learns easily,
while position, scale, skin tone, clutter and noise vary so the task is not trivial.

Output: ``OUT/<label>/<label>-NNN.jpg`` (JPEG quality 90), deterministic for a seed: every
image has its own RNG seeded by (seed, label index, image index), so the same seed gives the
same bytes and a larger ``per_label`` only appends images.

Usage:  python datasets/synth.py OUT [--per-label N] [--size PX] [--seed S]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SKIN_LIGHT = np.array([250, 218, 190])
SKIN_DARK = np.array([92, 58, 38])
HAIR = [(25, 20, 18), (45, 30, 20), (70, 45, 25), (95, 60, 30), (40, 40, 42), (110, 75, 40)]
HATS = [(245, 205, 20), (250, 130, 15), (240, 240, 235), (215, 30, 30)]


def _colour(rng: np.random.Generator, base: tuple[int, ...] | np.ndarray, jitter: int) -> tuple:
    """``base`` with a little per-channel jitter, clipped to valid RGB."""
    c = np.asarray(base, dtype=float) + rng.uniform(-jitter, jitter, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Random two-colour gradient at a random angle, plus noise and a few random boxes."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (xx * np.cos(angle) + yy * np.sin(angle))
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img += rng.normal(0, 10, img.shape)
    pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pic)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * size
        w, h = rng.uniform(0.08, 0.45, 2) * size
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.6:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
        else:
            draw.rectangle([x0, y0, x0 + w, y0 + h], outline=col, width=int(rng.integers(1, 4)))
    return pic


def _person(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, hat: bool) -> None:
    """Draw shoulders, neck, face, eyes and either hair (head) or a hard hat on top."""
    scale = rng.uniform(0.5, 1.0)
    h = 0.45 * scale * size                      # face height
    w = rng.uniform(0.68, 0.82) * h              # face width
    cx = rng.uniform(0.8 * w, size - 0.8 * w)    # horizontal jitter
    top = rng.uniform(0.3 * h + 2, max(0.3 * h + 3, size - 1.4 * h))
    skin = _colour(rng, SKIN_LIGHT + rng.random() * (SKIN_DARK - SKIN_LIGHT), 12)
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    # shoulders and neck first, so the face overlaps them
    draw.rounded_rectangle([cx - 1.2 * w, top + 1.12 * h, cx + 1.2 * w, size + 0.5 * h],
                           radius=int(0.35 * w), fill=shirt)
    draw.rectangle([cx - 0.22 * w, top + 0.8 * h, cx + 0.22 * w, top + 1.2 * h], fill=skin)
    draw.ellipse([cx - w / 2, top, cx + w / 2, top + h], fill=skin)
    # eyes, and a mouth line
    ey, ex, er = top + 0.5 * h, 0.2 * w, max(1.0, 0.055 * w)
    eye = _colour(rng, (30, 25, 25), 15)
    for sx in (-1, 1):
        draw.ellipse([cx + sx * ex - er, ey - er, cx + sx * ex + er, ey + er], fill=eye)
    draw.line([cx - 0.12 * w, top + 0.75 * h, cx + 0.12 * w, top + 0.75 * h],
              fill=_colour(rng, (120, 50, 50), 20), width=max(1, int(0.02 * h)))
    if hat:
        col = _colour(rng, HATS[int(rng.integers(len(HATS)))], 12)
        brim_y = top + rng.uniform(0.18, 0.26) * h
        dome_h = rng.uniform(0.45, 0.55) * h
        draw.chord([cx - 0.58 * w, brim_y - dome_h, cx + 0.58 * w, brim_y + dome_h],
                   180, 360, fill=col)
        bw, bt = rng.uniform(0.72, 0.85) * w, max(2.0, 0.07 * h)
        draw.rounded_rectangle([cx - bw, brim_y - bt / 2, cx + bw, brim_y + bt / 2],
                               radius=int(bt / 2), fill=col)
        ridge = tuple(max(0, v - 40) for v in col)  # centre ridge makes it read as a helmet
        draw.line([cx, brim_y - dome_h, cx, brim_y], fill=ridge, width=max(1, int(0.06 * w)))
    else:
        col = _colour(rng, HAIR[int(rng.integers(len(HAIR)))], 10)
        hair_y = top + rng.uniform(0.25, 0.36) * h
        lift = rng.uniform(0.04, 0.12) * h
        draw.chord([cx - 0.54 * w, top - lift, cx + 0.54 * w, 2 * hair_y - top + lift],
                   180, 360, fill=col)
        for x0 in (cx - 0.54 * w, cx + 0.42 * w):  # side hair down to the ears
            draw.rectangle([x0, hair_y - 1, x0 + 0.12 * w, top + 0.45 * h], fill=col)


def make_image(seed: int, label_idx: int, index: int, size: int = 160) -> Image.Image:
    """One picture; label_idx 0 = hair ("head"), 1 = hard hat ("hardhat")."""
    rng = np.random.default_rng([seed, label_idx, index])
    pic = _background(rng, size)
    _person(ImageDraw.Draw(pic), rng, size, hat=label_idx == 1)
    arr = np.asarray(pic, dtype=float) + rng.normal(0, 5, (size, size, 3))  # sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def generate(out: str | Path, per_label: int = 60, size: int = 160, seed: int = 0,
             labels: tuple[str, str] | list[str] = ("head", "hardhat")) -> dict:
    """Write ``per_label`` JPEGs per label into ``out/<label>/``; return the counts.

    ``labels`` names the two classes: the first gets hair, the second a hard hat.
    Refuses a non-empty ``out`` so that it never mixes with (or overwrites) other images.
    """
    out = Path(out)
    labels = list(labels)
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ValueError(f"labels must be two distinct names (hair, hat), not {labels}")
    if per_label < 1 or size < 32:
        raise ValueError("per_label must be >= 1 and size >= 32")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output folder {out} already exists and is not empty")
    digits = max(3, len(str(per_label - 1)))
    counts = {}
    for idx, label in enumerate(labels):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            make_image(seed, idx, i, size).save(folder / f"{label}-{i:0{digits}d}.jpg",
                                                "JPEG", quality=90)
        counts[label] = per_label
    return {"out": str(out), "size": size, "seed": seed, "labels": labels, "counts": counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Generate synthetic head/hardhat JPEGs in OUT/<label>/ (offline).")
    ap.add_argument("out", help="new or empty output folder")
    ap.add_argument("--per-label", type=int, default=60, help="images per label (default 60)")
    ap.add_argument("--size", type=int, default=160, help="square image side in px (default 160)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--labels", nargs=2, default=["head", "hardhat"], metavar=("HAIR", "HAT"),
                    help="folder names for the hair and hard-hat classes")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    try:
        summary = generate(args.out, args.per_label, args.size, args.seed, tuple(args.labels))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(", ".join(f"{n} {lb}" for lb, n in summary["counts"].items())
              + f" images ({args.size}px, seed {args.seed}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
