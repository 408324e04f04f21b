"""The same agent commands on two sides (x86 .venv-agent, arm64 chroot venv), timed, compared.

Why one Side type: the comparison is only fair when both architectures get the very same
argv and files; a side differs only in which python / fed-agent runs it and how.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from conftest import PHOTOS, REPO

SERVE_TRAIN = REPO / "tests" / "agent_serve_train.py"


@dataclass
class Side:
    """One architecture and TFLite backend: its python, its fed-agent, how to run a command
    (FED_TFLITE_BACKEND set to `backend`), what each step took."""

    arch: str
    backend: str
    python: str
    fed_agent: str
    runner: Callable[[list[str], float, dict], subprocess.CompletedProcess]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.arch} {self.backend}"

    @property
    def folder(self) -> str:
        return f"{self.arch}-{self.backend}"

    def run(self, step: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        start = time.monotonic()
        proc = self.runner(argv, timeout, {"FED_TFLITE_BACKEND": self.backend})
        self.timings[step] = time.monotonic() - start
        return proc


def training_data(dst: Path) -> Path:
    """12 train + 4 test photos per label of dataset_client1, plus two unreadable files
    (the same set tests/test_agent_without_tensorflow.py serves)."""
    for split, count in (("train", 12), ("test", 4)):
        for label in ("head", "hardhat"):
            (dst / split / label).mkdir(parents=True)
            for f in sorted((PHOTOS / "dataset_client1" / split / label).iterdir())[:count]:
                shutil.copy(f, dst / split / label / f.name)
    (dst / "train" / "head" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (dst / "train" / "hardhat" / "empty.jpg").write_bytes(b"")
    return dst


def serve_train(side: Side, work: Path, fedapp_dir: Path, artifacts: Path, timeout: float):
    """The ClientApp serves an artifacts and a train message; (summary, weights, stderr)."""
    out = work / side.folder
    data = training_data(out / "data")
    weights = out / "weights.npz"
    proc = side.run("ClientApp artifacts+train", [
        side.python, str(SERVE_TRAIN), str(fedapp_dir), str(data), str(out / "cache"),
        str(artifacts / "backbone.tflite"), str(artifacts / "trainer.tflite"), str(weights)], timeout)
    assert proc.returncode == 0, f"{side.name}: {proc.stderr[-3000:]}"
    with np.load(weights) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    return json.loads(proc.stdout.strip().splitlines()[-1]), arrays, proc.stderr


def predict(side: Side, config: Path, images: list[str], kind: str, timeout: float) -> dict:
    """`fed-agent -c CONFIG predict IMAGE... --json` on this side (the `kind` model installed)."""
    proc = side.run(f"predict --json {kind} ({len(images)} images)",
                    [side.fed_agent, "-c", str(config), "predict", *images, "--json"], timeout)
    assert proc.returncode == 0, f"{side.name}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def table(columns: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """A plain side-by-side table: one row per measure, one column per side."""
    width = max(len(what) for what, _ in rows)
    cell = max(18, *(len(c) for c in columns), *(len(v) for _, values in rows for v in values))
    lines = [" " * width + "".join(f"  {c:>{cell}}" for c in columns)]
    lines += [f"{what:{width}}" + "".join(f"  {v:>{cell}}" for v in values) for what, values in rows]
    return "\n".join(lines)
