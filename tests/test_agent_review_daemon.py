"""The review page next to a running fed-agent on the same store: the daemon's running model
sends frames to review, the page (its own process) shows them least sure first, a label and
a "not usable" made there are on disk at once and in the daemon's next heartbeat, and a frame
arriving while the page runs joins its queue: the two writers share the index lock and
neither undoes the other's change."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from fed_agent.model_store import ModelStore, models_root
from fed_common.store import split_for
from field_models import blues, colour_model, file_photos, photo, reds, signed_model
from review_harness import ReviewPage, get, index
from test_agent_pseudo_labels_daemon import counts_seen

pytestmark = needs_agent_venv
FRAMES = {"reddish.png": photo((170, 60, 70)), "bluish.png": photo((60, 70, 170)),
          "grey.png": photo((128, 128, 128)), "purple.png": photo((140, 40, 150))}


def act(page: ReviewPage, action: str, **form) -> None:
    csrf = re.search(rb'name="csrf" value="([^"]+)"', get(page.url)[2]).group(1).decode()
    body = urlencode({"csrf": csrf, **form}).encode()
    status, _, _ = get(page.url + action, {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert status == 303


def shas_on_page(page: ReviewPage) -> list[str]:
    """The current image's SHA-256, then the queue's, as the page lists them."""
    return re.findall(r'(?:<section id="current"|<li) data-sha="([0-9a-f]{64})"', get(page.url)[2].decode())


def test_the_page_and_the_daemon_share_the_store(tmp_path):
    state, key = tmp_path / "state", Ed25519PrivateKey.generate()
    file_photos(state, reds(3), blues(3))
    ModelStore(models_root(state), key.public_key()).install(signed_model(key, colour_model(True), 1),
                                                             colour_model(True))
    beats, notify = HeartbeatServer(), NotifySocket(tmp_path / "notify.sock")
    cfg = write_config(tmp_path / "agent.yaml", state, f"127.0.0.1:{free_port()}", beats.url, token_file(tmp_path),
                       free_port(), labeling__enabled=False)  # every classified frame waits for a person
    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    page = None
    try:
        wait_for(lambda: notify.lines("READY=1"), 30, what="READY=1")
        for name in ("reddish.png", "bluish.png", "grey.png"):
            (state / "inbox" / "unlabeled" / name).write_bytes(FRAMES[name])
        counts_seen(beats, review=3, unlabeled=0)
        page = ReviewPage(tmp_path, state, config=cfg)
        waiting = sorted((e for e in index(state).values() if e.status == "review"),
                         key=lambda e: (e.prediction.confidence, e.path))
        assert shas_on_page(page) == [e.sha256 for e in waiting]  # the daemon's guesses, least sure first
        least_sure, other = waiting[0], waiting[1]

        act(page, "label", sha=least_sure.sha256, label="hardhat")
        split = split_for(least_sure.sha256, 0.2)
        assert (index(state)[least_sure.sha256].status, index(state)[least_sure.sha256].path) == (
            "human", f"{split}/hardhat/{least_sure.path.split('/')[-1]}")
        act(page, "not-usable", sha=other.sha256)
        assert other.sha256 not in index(state)
        (state / "inbox" / "unlabeled" / "purple.png").write_bytes(FRAMES["purple.png"])
        images = counts_seen(beats, review=2, quarantined=1)  # the daemon counted both changes and the new frame
        hardhat = images.labels["hardhat"]
        assert hardhat.train + hardhat.test == 4  # 3 from the inbox, 1 from the page
        new = wait_for(lambda: [s for s in shas_on_page(page) if s not in {e.sha256 for e in waiting}], 30,
                       what="the new frame on the page")
        assert len(new) == 1 and index(state)[new[0]].status == "review"
        assert index(state)[least_sure.sha256].status == "human"  # the daemon's writes kept the page's label
    finally:
        if page is not None:
            assert page.stop() == 0
        agent.stop()
        beats.close()
        notify.close()
