"""`fedctl predict IMAGE...`: classify images with the newest registered model.

The score is calibrated with the float32 file's temperature when the version has one
(models.calibration), as a Pi's confidence is with its own file's: the same meaning here.
"""

from __future__ import annotations

import json
import sys

from fed_coordinator.fedctl.common import open_registry, state_dir


def cmd_predict(args) -> int:
    import numpy as np

    from fedapp.calibration import calibrated
    from fedapp.images import load_image
    from fedapp.tflite import load_interpreter

    from fed_coordinator.models.calibration import manifest_calibration

    latest = open_registry(args).latest()
    if latest is None:
        print(f"no registered model under {state_dir(args) / 'models'}", file=sys.stderr)
        return 1
    meta = json.loads((latest / "metadata.json").read_text())
    calibration = manifest_calibration(meta, "float32")
    interp = load_interpreter(latest / "model_float32.tflite")
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    status, rows = 0, []
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
        if calibration:
            probs = calibrated(probs, calibration["temperature"], calibration["probability_floor"])
        best = int(np.argmax(probs))
        rows.append({"image": image, "label": meta["labels"][best], "score": float(probs[best])})
    if args.json:
        print(json.dumps({"model_version": meta["version"], "predictions": rows}))
    else:
        for row in rows:
            print(f"{row['image']}\t{row['label']}\t{row['score']:.3f}")
    return status
