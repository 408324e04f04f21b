"""The arm64-vs-x86 table tests/test_arm64_agent.py prints and saves (test-artifacts/arm64.txt).

Why apart: the test reads as what runs and what must hold; this only lays the results out,
one column per side (arch x TFLite backend), one row per measure.
"""

from __future__ import annotations

import platform

import numpy as np

from .sides import table


def pairs(result, backends):
    """(arm64 side, its x86 reference) per backend."""
    by_name = {side.name: side for side in result["sides"]}
    return [(by_name[f"arm64 {b}"], by_name[f"x86 {b}"]) for b in backends]


def cell(value, *args) -> str:
    """value(*args), or "not run" where a side has no such result (arm64 ai-edge-litert's training)."""
    try:
        return value(*args)
    except KeyError:
        return "not run"


def per_side(result, value) -> list[str]:
    return [cell(value, result[side.name], side) for side in result["sides"]]


def against_x86(result, backends, value) -> list[str]:
    """`value(arm64 results, x86 results)` in the arm64 columns, "reference" in the x86 ones."""
    return [text for arm, x86 in pairs(result, backends)
            for text in (cell(value, result[arm.name], result[x86.name]), "reference")]


def prediction_rows(result, kinds, backends) -> list[tuple[str, list[str]]]:
    """Per model kind: labels agreeing, the largest score difference, each disagreement."""
    rows = []
    for kind in kinds:
        def zipped(a, x):
            return list(zip(a[kind]["predictions"], x[kind]["predictions"]))

        n = len(result["x86 tflite-runtime"][kind]["predictions"])
        rows.append((f"{kind} v{result['version']}: labels, {n} server photos", against_x86(
            result, backends, lambda a, x: f"{sum(p['label'] == q['label'] for p, q in zipped(a, x))}/{n} same")))
        rows.append((f"{kind}: max |score - x86's|", against_x86(
            result, backends, lambda a, x: f"{max(abs(p['score'] - q['score']) for p, q in zipped(a, x)):.1e}")))
        for arm, x86 in pairs(result, backends):
            for p, q in zip(result[arm.name][kind]["predictions"], result[x86.name][kind]["predictions"]):
                if p["label"] != q["label"]:
                    cells = [""] * len(result["sides"])
                    cells[result["sides"].index(arm)] = f"{p['label']} {p['score']:.4f}"
                    cells[result["sides"].index(x86)] = f"{q['label']} {q['score']:.4f}"
                    rows.append((f"{kind}: differs on {p['image'].split('/test/')[-1]}", cells))
    return rows


def comparison(result, kinds, backends, tolerances: str) -> str:
    """The side-by-side table: interpreter, weights, metrics, predictions, timings."""
    def weights_diff(a, x):
        return f"{max(float(np.max(np.abs(p - q))) for p, q in zip(a['train'][1], x['train'][1])):.1e}"

    rows = [("interpreter (fed-agent predict --json)", per_side(result, lambda r, s: r["int8"]["interpreter"])),
            ("machine (platform.machine)", per_side(result, lambda r, s: result["installed"]["machine"]
                                                    if s.arch == "arm64" else platform.machine())),
            ("trained weights: max |w - x86's w|", against_x86(result, backends, weights_diff)),
            ("train loss", per_side(result, lambda r, s: f"{r['train'][0]['metrics']['train-loss']:.8f}")),
            ("train accuracy", per_side(result, lambda r, s: "{:.4f}".format(
                r["train"][0]["last_training"]["train_accuracy"]))),
            ("examples / test / skipped", per_side(result, lambda r, s: "{num-examples} / {test-examples} / "
                                                   "{skipped-files}".format(**r["train"][0]["metrics"]))),
            *prediction_rows(result, kinds, backends)]
    blank = [""] * (len(result["sides"]) - 1)
    rows += [(f"time: {step}", [f"{seconds:.1f}s", *blank])
             for step, seconds in result["installed"]["timings"].items()]
    steps = dict.fromkeys(step for side in result["sides"] for step in side.timings)
    rows += [(f"time: {step}", [f"{side.timings[step]:.1f}s" if step in side.timings else "-"
                                for side in result["sides"]]) for step in steps]
    note = f"{tolerances}; emulated (qemu-user) timings are not a Pi's speed"
    return table([side.name for side in result["sides"]], rows) + "\n" + note
