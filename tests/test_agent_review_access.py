"""Who may use the review page and what a request can reach, against the installed
`fed-agent review` on a real agent store: off loopback the token is required (none: 401,
a wrong one: 403, the right one: 200, and `?token=` once becomes an HttpOnly cookie) and
never logged; the page refuses to start on a LAN address without one, naming the key; a
crafted SHA-256, path or label reads and moves nothing outside the review queue (a symbolic
link in data/ included); forms from another origin or without the page's form token, and a
host name that is not loopback, are refused; the page's policy allows its own script only."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from agent_harness import AGENT_BIN, token_file, write_config
from conftest import needs_agent_venv
from fed_agent.config import load_config
from fed_common.config import ConfigError
from fed_common.files import sha256_file
from fed_common.store import ImageStore, IndexEntry, StoredPrediction
from review_harness import ReviewPage, all_files, get, index, review_store

pytestmark = needs_agent_venv
TOKEN = "review-token-0123456789abcdef"


def page_token(body: bytes) -> str:
    return re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()


def post(url: str, form: dict, headers: dict | None = None):
    return get(url, {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
               urlencode(form).encode())


def test_off_loopback_the_token_is_required_and_never_logged(tmp_path):
    state = tmp_path / "state"
    first = min(review_store(state), key=lambda e: e.prediction.confidence)
    secret = tmp_path / "review-token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    page = ReviewPage(tmp_path, state, host="0.0.0.0", token_file=str(secret))
    try:
        thumb = f"{page.url}thumb/{first.sha256}.jpg"
        for url in (page.url, thumb, f"{page.url}review.js"):
            assert get(url)[0] == 401, url
            assert get(url, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 403, url
        assert get(page.url + "?token=wrong")[0] == 403
        assert get(page.url, {"Cookie": "fed_review_token=wrong"})[0] == 403
        status, _, body = get(page.url, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and first.sha256.encode() in body
        assert get(thumb, {"Authorization": f"Bearer {TOKEN}"})[0] == 200

        status, headers, _ = get(f"{page.url}?token={quote(TOKEN)}")  # the link a person opens once
        assert status == 303 and headers["Location"] == "/"  # the token leaves the address
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"fed_review_token={TOKEN};") and "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()  # Strict would be dropped after a link from another site
        status, _, body = get(page.url, {"Cookie": f"fed_review_token={TOKEN}"})
        assert status == 200
        form = {"sha": first.sha256, "csrf": page_token(body), "label": "head"}
        assert post(page.url + "label", form)[0] == 401  # the form token alone is not enough
        assert first.sha256 in index(state) and index(state)[first.sha256].status == "review"
        assert post(page.url + "label", form, {"Cookie": f"fed_review_token={TOKEN}"})[0] == 303
        assert index(state)[first.sha256].status == "human"
    finally:
        assert page.stop() == 0
    log = page.log_path.read_text()
    assert TOKEN not in log and "wrong-token" not in log
    refused = [e for e in page.events() if e.get("event") == "review_request_refused"]
    assert {e["reason"] for e in refused} == {"no token", "wrong token"}


def review(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AGENT_BIN / "fed-agent"), "-c", str(cfg), "review", *args],
                          capture_output=True, text=True, timeout=60)


def test_a_lan_address_without_a_token_file_is_refused_naming_the_key(tmp_path):
    state = tmp_path / "state"
    review_store(state)
    common = (state, "127.0.0.1:9", "http://127.0.0.1:9/api/v1/heartbeat", token_file(tmp_path), 9999)
    lan = write_config(tmp_path / "lan.yaml", *common, review__host="0.0.0.0")
    proc = review(lan)
    assert proc.returncode == 78 and "At 'review.token_file': required when the review page listens on " \
        "'0.0.0.0', not a loopback address" in proc.stderr, proc.stderr
    local = write_config(tmp_path / "local.yaml", *common)
    proc = review(local, "--host", "192.168.1.20")  # the override is checked too
    assert proc.returncode == 78 and "At 'review.token_file': required" in proc.stderr, proc.stderr
    loose = tmp_path / "loose-token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    proc = review(write_config(tmp_path / "loose.yaml", *common, review__host="0.0.0.0",
                               review__token_file=str(loose)))
    assert proc.returncode == 1 and f"is open to other users (mode 0644): chmod 600 {loose}" in proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout
    with pytest.raises(ConfigError, match=r"At 'review.host': must be an IP address or a host name"):
        load_config(write_config(tmp_path / "bad.yaml", *common, review__host="http://pi:80"))
    with pytest.raises(ConfigError, match=r"At 'review.port': must be at most 65535"):
        load_config(write_config(tmp_path / "port.yaml", *common, review__port=70000))
    assert load_config(local).review.host == "127.0.0.1" and load_config(local).review.token_file is None


def test_a_crafted_sha_path_or_label_reads_and_moves_nothing_outside_the_queue(tmp_path):
    state = tmp_path / "state"
    waiting = review_store(state)
    outside = tmp_path / "secret.jpg"  # a file outside the store, reachable only by a link
    outside.write_bytes(b"\xff\xd8 not for the page")
    link = state / "data" / "unlabeled" / "0123456789abcdef.jpg"
    link.symlink_to(outside)
    store = ImageStore(state / "data")
    crafted = IndexEntry(sha256=sha256_file(outside), label=None, split="unlabeled", size=link.stat().st_size,
                         path=link.relative_to(state / "data").as_posix(), status="review", reason="crafted",
                         prediction=StoredPrediction(label="head", confidence=0.01, model_version=2, time="now"))
    store.write_index({**index(state), crafted.sha256: crafted})
    human = next(e for e in index(state).values() if e.status == "human")
    before = all_files(state)
    page = ReviewPage(tmp_path, state)
    try:
        status, _, body = get(page.url)
        csrf = page_token(body)
        for path in ("thumb/../../secret.jpg", "thumb/..%2F..%2Fsecret.jpg", "image/%2e%2e%2fsecret.jpg",
                     f"thumb/{crafted.sha256}.jpg", f"image/{'0' * 64}.jpg", f"image/{waiting[0].sha256}",
                     f"etc/{waiting[0].sha256}.jpg", "thumb/" + quote(str(outside), safe="") + ".jpg"):
            status, _, answer = get(page.url + path)
            assert status in (400, 404) and b"not for the page" not in answer, (path, status)
        for form, field in ((dict(sha="../../secret.jpg"), "sha"), (dict(sha=str(outside)), "sha"),
                            (dict(sha=waiting[0].sha256.upper()), "sha"),
                            (dict(sha=waiting[0].sha256, label="../head"), "label")):
            action = "label" if "label" in form else "not-usable"
            status, _, answer = post(page.url + action, {"csrf": csrf, **form})
            assert status == 400 and f"field &#x27;{field}&#x27;".encode() in answer, (form, answer[-300:])
        for sha in (crafted.sha256, human.sha256, "f" * 64):  # well-formed: nothing done, and the page says why
            for action, extra in (("label", {"label": "head"}), ("not-usable", {}), ("skip", {})):
                assert post(page.url + action, {"csrf": csrf, "sha": sha, **extra})[0] == 303
        assert "nothing done" in get(page.url)[2].decode()
        assert all_files(state) == before and os.path.islink(link) and outside.read_bytes().startswith(b"\xff")

        status, headers, body = get(page.url)
        policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
        assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
        assert policy["form-action"] == "'self'" and "unsafe-inline" not in headers["Content-Security-Policy"]
        assert body.count(b"<script") == 1 and b'<script src="/review.js" defer></script>' in body
        form = {"csrf": csrf, "sha": waiting[0].sha256}
        assert post(page.url + "skip", {"sha": waiting[0].sha256, "csrf": "stale"})[0] == 403
        assert post(page.url + "skip", form, {"Origin": "http://evil.example"})[0] == 403
        assert post(page.url + "skip", form, {"Sec-Fetch-Site": "cross-site"})[0] == 403
        assert get(page.url, {"Host": "evil.example"})[0] == 421  # a rebound name cannot read the page
        assert get(page.url, {"Host": f"localhost:{page.port + 1}"})[0] == 200  # ssh -L to another port
    finally:
        assert page.stop() == 0
