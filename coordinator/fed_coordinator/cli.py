"""`fedctl`: the operator's command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_STATE = Path(os.environ.get("FED_STATE_DIR", "/var/lib/fed-coordinator"))


def _registry(args):
    from .registry import ModelRegistry

    return ModelRegistry(Path(args.state_dir) / "models")


def cmd_predict(args) -> int:
    from fedapp.images import load_image
    from fedapp.tflite import load_interpreter

    latest = _registry(args).latest()
    if latest is None:
        print(f"no registered model under {Path(args.state_dir) / 'models'}", file=sys.stderr)
        return 1
    meta = json.loads((latest / "metadata.json").read_text())
    interp = load_interpreter(latest / "model_float32.tflite")
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    status = 0
    rows = []
    for image in args.images:
        try:
            pixels = load_image(image)
        except (OSError, ValueError) as exc:
            print(f"{image}: error: {exc}", file=sys.stderr)
            status = 1
            continue
        interp.set_tensor(inp["index"], pixels[None])
        interp.invoke()
        probs = interp.get_tensor(out["index"])[0]
        best = int(np.argmax(probs))
        rows.append({"image": image, "label": meta["labels"][best], "score": float(probs[best])})
    if args.json:
        print(json.dumps({"model_version": meta["version"], "predictions": rows}))
    else:
        for row in rows:
            print(f"{row['image']}\t{row['label']}\t{row['score']:.3f}")
    return status


def cmd_models(args) -> int:
    reg = _registry(args)
    items = [reg.metadata(v) for v in reg.versions()]
    if args.json:
        print(json.dumps(items))
        return 0
    print(f"{'VERSION':<8} {'CREATED':<21} {'CAMPAIGN':<28} {'SERVER_ACC':>10}")
    for m in items:
        acc = m.get("server_accuracy")
        print(f"{m['version']:<8} {m['created']:<21} {m.get('campaign_id', ''):<28} "
              f"{'' if acc is None else f'{acc:.3f}':>10}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedctl", description=__doc__)
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE),
                        help="coordinator state folder (env FED_STATE_DIR)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify images with the newest registered model")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("models", help="list registered models")
    p.set_defaults(func=cmd_models)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
