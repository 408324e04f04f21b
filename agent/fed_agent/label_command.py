"""`fed-agent [-c FILE] label IMAGE LABEL`: give a stored image without a human label its label.

IMAGE is the stored file (its path, or its path under data/), or its SHA-256 (or a unique
prefix of 8 hex digits or more); it must be unlabeled, pseudo-labeled or in the review queue.
The image moves into data/<split>/<label>/ at once, under the same index lock as the running
daemon, which sees the change at its next look at the index. This is the primitive the
review page calls. Exit status 0 when labeled (or it already had this label), 1 naming the
problem (no such stored image, an unknown label, a human label already there, the store
busy or not writable), 78 on a bad configuration. Run it as the agent's user.
"""

from __future__ import annotations

import json
import sys

from .cli import command_parser, parse_with_config


def label_main(argv: list[str]) -> int:
    parser = command_parser("label", __doc__.splitlines()[0], "one JSON document instead of a line")
    parser.add_argument("image", help="the stored image: its path or SHA-256")
    parser.add_argument("label", help="one of the configured labels")
    args, cfg, status = parse_with_config(parser, argv)
    if cfg is None:
        return status
    from fed_common.logs import configure

    configure(cfg.logging.level, stream=sys.stderr)  # the JSON lines a script may keep; stdout is the answer
    try:
        labeled, was = label_stored_image(cfg, args.image, args.label)
    except (ValueError, OSError, RuntimeError) as exc:  # LabelRefused, IndexBusy, a failed move
        print(f"fed-agent: cannot label {args.image}: {exc}", file=sys.stderr)
        return 1
    answer = {"sha256": labeled.sha256, "label": labeled.label, "path": f"data/{labeled.path}", "was": was}
    print(json.dumps(answer) if args.json else f"data/{labeled.path}\t{labeled.label}\t(was {was})")
    return 0


def label_stored_image(cfg, image: str, label: str):
    """(the image's new entry, what it was: unlabeled / pseudo 'x' 0.93 v2 / review ...)."""
    import structlog

    from .human_labels import apply_human_label, find_stored
    from .store_writer import IndexBusy, StoreWriter

    structlog.contextvars.bind_contextvars(agent=cfg.agent.name)
    log = structlog.get_logger()
    writer = StoreWriter(cfg.data_dir, log)
    try:
        with writer.editing(save_now=True) as entries:
            sha = find_stored(entries, cfg.data_dir, image)
            entry = entries[sha]
            guess = entry.prediction
            was = entry.status + (f" {guess.label!r} {guess.confidence:.2f} by v{guess.model_version}" if guess else "")
            labeled = apply_human_label(entries, cfg.data_dir, sha, label, list(cfg.labels),
                                        cfg.inbox.test_fraction, log)
    except IndexBusy as exc:
        raise RuntimeError(str(exc)) from None
    return labeled, was
