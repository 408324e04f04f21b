"""`fed-agent [-c FILE] review [--host H] [--port P]`: the review page, in its own process.

Why its own process and not a thread of the daemon: a person's browser must never be able
to slow down or stop the agent (its watchdog, the SuperNode, the heartbeat), and the page is
only wanted while someone reviews. It shares nothing with the daemon but the store, whose
index lock both take (store_writer), so they can run at the same time. Run it as the agent's
user (it moves files in the agent's state folder).

It listens on `review.host:review.port` (127.0.0.1:8765 by default: reach it with
`ssh -L 8765:127.0.0.1:8765 pi`); --host and --port override the config. Any other than a
loopback address needs `review.token_file` (checked again here, after the overrides): it
refuses to start otherwise, exit 78 naming the key. Exit 1 when the token file is unusable.
Logs are JSON lines on stdout, never with the token; uvicorn's access log is off.
"""

from __future__ import annotations

import sys


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    import argparse

    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535 (got {text!r})")
    return port


def review_main(argv: list[str]) -> int:
    from .cli import command_parser, parse_with_config

    parser = command_parser("review", "Serve the review page, in its own process.", None)
    parser.add_argument("--host", help="address to listen on (default: review.host)")
    parser.add_argument("--port", type=port_number, help="port to listen on (default: review.port)")
    args, cfg, status = parse_with_config(parser, argv)
    if cfg is None:
        return status
    from .review_auth import binding_problem, read_token

    host, port = args.host or cfg.review.host, args.port or cfg.review.port
    problem = binding_problem(host, cfg.review.token_file)
    if problem:
        print(f"fed-agent: At 'review.token_file': {problem}", file=sys.stderr)
        return 78
    try:
        token = read_token(cfg.review.token_file) if cfg.review.token_file else None
    except ValueError as exc:
        print(f"fed-agent: {exc}", file=sys.stderr)
        return 1
    return serve(cfg, host, port, token)


def serve(cfg, host: str, port: int, token) -> int:
    import structlog
    from fed_common.logs import configure

    from .review_app import create_review_app, run_server
    from .review_auth import PageGuard, is_loopback
    from .review_queue import ReviewQueue
    from .store_writer import IndexBusy, StoreWriter

    configure(cfg.logging.level)
    structlog.contextvars.bind_contextvars(agent=cfg.agent.name, component="review")
    log = structlog.get_logger()
    if not cfg.data_dir.is_dir():
        log.error("review_failed", error=f"no store at {cfg.data_dir} (has the agent run here?)")
        return 1
    writer = StoreWriter(cfg.data_dir, log, lock_timeout=10.0)
    queue = ReviewQueue(writer, cfg.quarantine_dir, list(cfg.labels), cfg.inbox.test_fraction, log)
    app = create_review_app(queue, PageGuard(token, loopback_only=is_loopback(host)), cfg.agent.name, log)
    waiting = None
    try:
        waiting = len(queue.items())
    except (IndexBusy, OSError) as exc:  # the page says so too, at each load
        log.warning("review_store_unreadable", error=str(exc)[:300])
    shown = f"[{host}]" if ":" in host else host
    started = run_server(app, host, port, lambda: log.info(
        "review_page_started", url=f"http://{shown}:{port}/", token_required=token is not None, waiting=waiting))
    log.info("review_page_stopped" if started else "review_failed", host=host, port=port)
    return 0 if started else 1
