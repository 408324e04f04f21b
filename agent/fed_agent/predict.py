"""`fed-agent [-c FILE] predict IMAGE... [--json]`: classify images with the model this Pi runs.

Same decoding as training and the coordinator's Keras model (fedapp.images: RGB, bilinear to
the model's input size, float32 0..255); the labels come in output order from the signed
manifest the running model was installed with. An image that cannot be read is named on
stderr and the exit status is 1; the others are still classified. The classifying is
fed_agent.classifier's, the same the daemon runs on every image its inbox files.
"""

from __future__ import annotations

import json
import sys

from .cli import command_parser, parse_with_config


def predict_main(argv: list[str]) -> int:
    parser = command_parser("predict", __doc__.splitlines()[0], "one JSON document instead of lines")
    parser.add_argument("images", nargs="+")
    args, cfg, status = parse_with_config(parser, argv)
    if cfg is None:
        return status
    from .inference import running_classifier

    classifier = running_classifier(cfg)
    try:
        model = classifier.model()
    except (OSError, ValueError) as exc:  # ManifestRejected: the file on disk does not load
        print(f"fed-agent: the running model under {classifier.root} cannot be used: {exc}", file=sys.stderr)
        return 1
    if model is None:
        print(f"fed-agent: no model installed yet under {classifier.root}", file=sys.stderr)
        return 1
    rows, failed = [], 0
    for image in args.images:
        try:
            prediction = model.classify_file(image)
        except (OSError, ValueError) as exc:
            print(f"{image}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        rows.append({"image": image, "label": prediction.label, "score": prediction.confidence})
    if args.json:
        from fedapp.tflite import backend

        print(json.dumps({"model_version": model.version, "interpreter": backend(), "predictions": rows}))
    else:
        for row in rows:
            print(f"{row['image']}\t{row['label']}\t{row['score']:.3f}")
    return 1 if failed else 0
