"""The review page in headless Chromium against a real agent store and the installed
`fed-agent review`: the least confident image first with the model's guess, the rest as
thumbnails in order; a click on a label button and a key press (1, 2, ...) each move the
right file into data/<split>/<label>/ and make its index entry a human label, and the next
image appears; s puts the image at the back and changes nothing on disk; x moves it to
quarantine with its note and out of the index. On a LAN address the browser gets in with
the token once (a cookie from then on). A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from chromium_pipe import Chromium
from conftest import REPO, needs_agent_venv
from fed_common.store import split_for
from review_harness import TEST_FRACTION, ReviewPage, all_files, index, review_store

pytestmark = [needs_agent_venv, pytest.mark.skipif(shutil.which("chromium") is None,
                                                   reason="Debian's chromium is not installed (.ci/run installs it)")]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def reviewing(tmp_path):
    """(state folder, review entries by confidence, the page's process, the browser on the page)."""
    state = tmp_path / "state"
    entries = sorted(review_store(state), key=lambda e: e.prediction.confidence)
    page = ReviewPage(tmp_path, state)
    browser = Chromium(tmp_path / "chromium")
    try:
        browser.open(page.url)
        yield state, entries, page, browser
    finally:
        browser.close()
        assert page.stop() == 0, page.log_path.read_text()[-2000:]


def current(browser) -> str:
    return browser.evaluate("document.querySelector('#current').dataset.sha")


def shown_queue(browser) -> list[str]:
    return browser.evaluate("Array.from(document.querySelectorAll('#queue li')).map(li => li.dataset.sha)")


def next_page(browser, after: str) -> None:
    """Wait for the page the action redirects to: another image current, all images loaded."""
    browser.loaded(lambda: current(browser) not in (None, after), "the next image")


def assert_labeled(state: Path, entry, label: str) -> None:
    """The file is in data/<split>/<label>/ (split by its hash), gone from data/unlabeled/,
    and its index entry is a plain human label."""
    split = split_for(entry.sha256, TEST_FRACTION)
    moved = state / "data" / split / label / Path(entry.path).name
    assert moved.is_file() and not (state / "data" / entry.path).exists()
    now = index(state)[entry.sha256]
    assert (now.status, now.label, now.split, now.path, now.prediction) == (
        "human", label, split, f"{split}/{label}/{moved.name}", None)


def test_the_least_confident_image_comes_first_and_a_click_or_a_key_labels_it(reviewing):
    state, entries, page, browser = reviewing
    assert current(browser) == entries[0].sha256  # 0.42 first, then 0.55, 0.66, 0.73, 0.81
    assert shown_queue(browser) == [e.sha256 for e in entries[1:]]
    assert browser.evaluate("document.querySelector('#guess').textContent") == "hardhat"
    assert browser.evaluate("document.querySelector('#confidence').textContent") == "0.42"
    assert browser.evaluate("Array.from(document.querySelectorAll('#queue .guess')).map(s => s.textContent)") == [
        "hardhat 0.55", "head 0.66", "head 0.73", "head 0.81"]
    assert browser.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")  # thumbnails served
    assert browser.evaluate("document.querySelector('#current img').naturalWidth") == 320
    assert browser.evaluate("document.querySelector('#queue img').naturalWidth") == 160
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.screenshot(ARTIFACTS / "review-page.png")
    assert shot.stat().st_size > 20_000

    browser.click("button[value=head]")  # a click on "1 head" (the model said hardhat: the person wins)
    next_page(browser, entries[0].sha256)
    assert_labeled(state, entries[0], "head")
    assert current(browser) == entries[1].sha256
    assert browser.evaluate("document.querySelector('#notice').textContent").startswith("labeled head: data/")

    browser.press("2")  # the key for the second label
    next_page(browser, entries[1].sha256)
    assert_labeled(state, entries[1], "hardhat")
    assert current(browser) == entries[2].sha256 and shown_queue(browser) == [e.sha256 for e in entries[3:]]
    assert browser.evaluate("document.querySelector('#waiting').textContent") == "3"
    labeled = [e for e in page.events() if e.get("event") == "image_labeled"]
    assert [(e["sha256"], e["label"], e["was"], e["model_label"]) for e in labeled] == [
        (entries[0].sha256, "head", "review", "hardhat"), (entries[1].sha256, "hardhat", "review", "hardhat")]


def test_skip_puts_the_image_last_and_not_usable_quarantines_it(reviewing):
    state, entries, page, browser = reviewing
    before = all_files(state)
    browser.press("s")
    next_page(browser, entries[0].sha256)
    assert current(browser) == entries[1].sha256
    assert shown_queue(browser) == [e.sha256 for e in (*entries[2:], entries[0])]  # at the back
    assert all_files(state) == before  # nothing on disk changed, the index included

    browser.click("button[data-key=x]")  # "x not usable", by a click
    next_page(browser, entries[1].sha256)
    gone = entries[1]
    quarantined = state / "quarantine" / "unlabeled" / Path(gone.path).name
    assert quarantined.read_bytes() == before[f"data/{gone.path}"]  # moved, never deleted
    note = json.loads(quarantined.with_name(quarantined.name + ".reason.json").read_text())
    assert (note["reason"], note["sha256"], note["source"]) == ("not usable (review page)", gone.sha256,
                                                               f"data/{gone.path}")
    assert note["prediction"]["label"] == "hardhat" and note["prediction"]["confidence"] == 0.55
    assert gone.sha256 not in index(state) and not (state / "data" / gone.path).exists()
    assert current(browser) == entries[2].sha256
    assert browser.evaluate("document.querySelector('#waiting').textContent") == "4"

    browser.press("x")  # by its key too
    next_page(browser, entries[2].sha256)
    assert entries[2].sha256 not in index(state)
    assert (state / "quarantine" / "unlabeled" / Path(entries[2].path).name).is_file()
    assert shown_queue(browser) == [entries[4].sha256, entries[0].sha256]  # the skipped one still last
    rest = index(state)
    assert {sha for sha, e in rest.items() if e.status == "review"} == {e.sha256 for e in (entries[0], *entries[3:])}


def test_on_a_lan_address_the_browser_needs_the_token_once(tmp_path):
    state = tmp_path / "state"
    first = min(review_store(state), key=lambda e: e.prediction.confidence)
    secret = tmp_path / "review-token"
    secret.write_text("lan-token-0123456789abcdef\n")
    secret.chmod(0o600)
    page = ReviewPage(tmp_path, state, host="0.0.0.0", token_file=str(secret))
    browser = Chromium(tmp_path / "chromium")
    try:
        browser.open(page.url)
        assert browser.evaluate("document.title") == "Token needed" and current(browser) is None
        browser.page("Page.navigate", url=page.url + "?token=lan-token-0123456789abcdef")
        browser.loaded(lambda: browser.evaluate("location.href") == page.url and current(browser), "the queue")
        assert current(browser) == first.sha256  # the cookie carries the token from here on
        browser.press("1")
        next_page(browser, first.sha256)
        assert_labeled(state, first, "head")
    finally:
        browser.close()
        assert page.stop() == 0
    assert "lan-token" not in page.log_path.read_text()
