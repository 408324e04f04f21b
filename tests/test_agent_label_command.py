"""`fed-agent label IMAGE LABEL`, the installed command from the agent venv: a stored image
without a human label (unlabeled, pseudo-labeled, in review) becomes a human label, named by
its path or its SHA-256; anything else exits 1 naming the problem and changes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent_harness import AGENT_BIN, token_file, write_config
from conftest import needs_agent_venv
from field_models import prediction
from fed_common.store import ImageStore, split_for
from test_agent_pseudo_labels import file_images, labeler_for, make_inbox, statuses
from test_agent_inbox import jpeg

pytestmark = needs_agent_venv


def label(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AGENT_BIN / "fed-agent"), "-c", str(cfg), "label", *args],
                          capture_output=True, text=True, timeout=120)


def test_label_gives_a_stored_image_its_human_label_by_path_or_hash(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    file_images(state, inbox, "head", [jpeg(i) for i in range(3)], "h")
    pseudo, review, plain = file_images(state, inbox, "unlabeled", [jpeg(10), jpeg(11), jpeg(12)])
    labeler = labeler_for(inbox)
    labeler.decide(pseudo.sha256, prediction("head", 0.99, version=2))
    labeler.decide(review.sha256, prediction("hardhat", 0.61, version=2))
    inbox.flush()
    cfg = write_config(tmp_path / "agent.yaml", state, "127.0.0.1:9", "http://127.0.0.1:9/api/v1/heartbeat",
                       token_file(tmp_path), 9999, inbox__test_fraction=0.5)

    by_path = label(cfg, str(state / "data" / pseudo.path), "hardhat")  # the model said head: the person wins
    assert by_path.returncode == 0, by_path.stderr
    split = split_for(pseudo.sha256, 0.5)
    moved = f"data/{split}/hardhat/{Path(pseudo.path).name}"
    assert by_path.stdout == f"{moved}\thardhat\t(was pseudo 'head' 0.99 by v2)\n"
    assert (state / moved).read_bytes() == jpeg(10) and not (state / "data" / pseudo.path).exists()
    logged = [json.loads(line) for line in by_path.stderr.splitlines()]
    assert [(e["event"], e["agent"], e["was"], e["model_label"]) for e in logged] == [
        ("image_labeled", "pi-test", "pseudo", "head")]

    by_hash = label(cfg, review.sha256[:12], "head", "--json")
    assert by_hash.returncode == 0, by_hash.stderr
    answer = json.loads(by_hash.stdout)
    assert (answer["sha256"], answer["label"], answer["was"]) == (review.sha256, "head", "review 'hardhat' 0.61 by v2")
    assert label(cfg, plain.path, "head").returncode == 0  # a path under data/ will do too

    now = statuses(state)
    assert [(now[e.sha256].status, now[e.sha256].label) for e in (pseudo, review, plain)] == [
        ("human", "hardhat"), ("human", "head"), ("human", "head")]
    assert {e.sha256 for s in ("train", "test") for e in ImageStore(state / "data").entries(s, ["head", "hardhat"])} \
        >= {pseudo.sha256, review.sha256, plain.sha256}  # training data now, as human labels
    again = label(cfg, pseudo.sha256, "hardhat")  # the same label again: nothing to do
    assert again.returncode == 0 and "(was human)" in again.stdout


def test_label_refuses_an_unknown_image_or_label_and_a_human_label_naming_the_problem(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    (human,) = file_images(state, inbox, "head", [jpeg(1)], "h")
    (frame,) = file_images(state, inbox, "unlabeled", [jpeg(2)])
    stray = tmp_path / "camera.jpg"
    stray.write_bytes(jpeg(3))
    cfg = write_config(tmp_path / "agent.yaml", state, "127.0.0.1:9", "http://127.0.0.1:9/api/v1/heartbeat",
                       token_file(tmp_path), 9999)
    before = (state / "data" / ".index.json").read_bytes()
    cases = [
        ((str(state / "data" / frame.path), "cat"), "unknown label 'cat' (labels: head, hardhat)"),
        ((str(tmp_path / "nowhere.jpg"), "head"), "no such stored image"),
        ((str(stray), "head"), "is not an image in the store"),
        (("0" * 64, "head"), "no such stored image"),
        ((human.sha256, "hardhat"), f"data/{human.path} already has the human label 'head'"),
    ]
    for args, problem in cases:
        proc = label(cfg, *args)
        assert proc.returncode == 1 and proc.stdout == "", (args, proc.stdout)
        assert proc.stderr.startswith(f"fed-agent: cannot label {args[0]}: ") and problem in proc.stderr, proc.stderr
    assert (state / "data" / ".index.json").read_bytes() == before  # nothing changed
    assert (state / "data" / frame.path).is_file() and stray.is_file()
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("agent: {name: pi-1}\nlabeling: {pseudo_threshold: 2}\n")
    proc = label(bad_config, frame.sha256, "head")
    assert proc.returncode == 78 and "labeling.pseudo_threshold" in proc.stderr
