"""`fed-agent [-c FILE] predict IMAGE... [--json]`: classify images with the model this Pi runs.

Same decoding as training and the coordinator's Keras model (fedapp.images: RGB, bilinear to
the model's input size, float32 0..255); the labels come in output order from the signed
manifest the running model was installed with. An image that cannot be read is named on
stderr and the exit status is 1; the others are still classified.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def predict_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fed-agent predict", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=os.environ.get("FED_AGENT_CONFIG", "/etc/fed-agent/agent.yaml"))
    parser.add_argument("command", choices=["predict"])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    args = parser.parse_args(argv)
    from fed_common.config import ConfigError
    from fedapp.images import decode_image
    from fedapp.tflite import load_interpreter

    from .config import load_config
    from .model_store import MODEL_FILE, ModelStore

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"fed-agent: {exc}", file=sys.stderr)
        return 78
    store = ModelStore(cfg.layout.state_dir / "models", public_key=None)
    manifest = store.running()
    if manifest is None:
        print(f"fed-agent: no model installed yet under {store.root}", file=sys.stderr)
        return 1
    interpreter = load_interpreter(str(store.root / "current" / MODEL_FILE))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows, failed = [], 0
    for image in args.images:
        try:
            pixels = decode_image(Path(image).read_bytes(), image)
        except (OSError, ValueError) as exc:
            print(f"{image}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        interpreter.set_tensor(inp["index"], pixels[None].astype(np.float32))
        interpreter.invoke()
        scores = interpreter.get_tensor(out["index"])[0]
        best = int(np.argmax(scores))
        rows.append({"image": image, "label": manifest.labels[best], "score": round(float(scores[best]), 4)})
    if args.json:
        print(json.dumps({"model_version": manifest.version, "predictions": rows}))
    else:
        for row in rows:
            print(f"{row['image']}\t{row['label']}\t{row['score']:.3f}")
    return 1 if failed else 0
