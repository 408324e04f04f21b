"""Every line a process logs is one JSON object: structlog, stdlib records and warnings."""

import io
import json
import logging
import warnings

from fed_common import logs


def test_structlog_stdlib_and_warnings_are_json_lines():
    out = io.StringIO()
    logs.configure("info", stream=out)
    try:
        logs.get_logger(agent="pi-1").info("hello", round=2)
        logging.getLogger("uvicorn.error").warning("from stdlib")
        warnings.warn("deprecated\nover two lines", UserWarning)
    finally:
        logging.captureWarnings(False)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"].split(":")[0] if line.get("logger") == "py.warnings" else line["event"]
            for line in lines][:2] == ["hello", "from stdlib"]
    assert lines[0]["agent"] == "pi-1" and lines[0]["round"] == 2
    assert lines[2]["logger"] == "py.warnings" and "over two lines" in lines[2]["event"]


def test_one_line_per_http_request_is_left_out_but_http_warnings_stay():
    out = io.StringIO()
    logs.configure("info", stream=out)
    try:
        logging.getLogger("httpx").info('HTTP Request: POST http://x/v1/runtime/push-logs "200 OK"')
        logging.getLogger("httpx").warning("retrying after a connection error")
        logging.getLogger("flwr").info("flower's own line")
    finally:
        logging.captureWarnings(False)
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["retrying after a connection error", "flower's own line"]
