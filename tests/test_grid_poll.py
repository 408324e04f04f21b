"""fedapp.grid_poll.FastPollGrid: replies polled often, follow-ups, and a bounded pull.

The grid here is a stand-in for Flower's (push ids, pull replies): these are unit tests of
our wrapper; the campaign tests run it against the real SuperLink."""

from __future__ import annotations

import threading
import time

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedapp.grid_poll import FastPollGrid


@pytest.fixture(autouse=True)
def serverapp_identity(monkeypatch):
    """What flwr-serverapp sets before a ServerApp builds messages."""
    for name, value in (("_run_id", 7), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


class ScriptedGrid:
    """Replies to each pushed message after `delay` seconds; `stuck` ids hang a pull."""

    def __init__(self, delay: float = 0.0, stuck: frozenset[int] = frozenset()) -> None:
        self.delay, self.stuck = delay, stuck
        self.pushed: dict[str, tuple[Message, float]] = {}
        self.pulls = 0
        self.release = threading.Event()

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg_id = f"m{len(self.pushed)}"
            self.pushed[msg_id] = (msg, time.monotonic())
            ids.append(msg_id)
        return ids

    def pull_messages(self, ids):
        self.pulls += 1
        out = []
        for msg_id in sorted(ids):
            msg, at = self.pushed[msg_id]
            if time.monotonic() - at < self.delay:
                continue
            if msg.metadata.dst_node_id in self.stuck:
                self.release.wait()  # Flower retrying an object that never comes
            out.append(reply_to(msg, msg_id))
        return out


def reply_to(msg: Message, msg_id: str) -> Message:
    class Meta:
        src_node_id = msg.metadata.dst_node_id
        reply_to_message_id = msg_id
        message_type = msg.metadata.message_type

    class Reply:
        metadata = Meta()
    return Reply()


def message(node: int, kind: str = "train") -> Message:
    return Message(RecordDict({"config": ConfigRecord({"x": 1})}), node, kind)


def test_replies_are_picked_up_within_a_poll_not_three_seconds():
    grid = FastPollGrid(ScriptedGrid(delay=0.3))
    started = time.monotonic()
    replies = grid.send_and_receive([message(1), message(2)], timeout=10)
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2]
    assert time.monotonic() - started < 1.5  # Flower's own loop sleeps 3 s after the first pull


def test_a_follow_up_replaces_the_reply_within_the_same_exchange():
    def follow_up(reply):
        if reply.metadata.message_type == "train" and reply.metadata.src_node_id == 2:
            return message(2, "query.artifacts")
        return None

    grid = FastPollGrid(ScriptedGrid(), follow_up=follow_up)
    replies = grid.send_and_receive([message(1), message(2)], timeout=10)
    assert sorted((r.metadata.src_node_id, r.metadata.message_type) for r in replies) == [
        (1, "train"), (2, "query.artifacts")]


def test_a_pull_that_hangs_ends_at_the_deadline_and_names_the_destination(caplog):
    scripted = ScriptedGrid(stuck=frozenset({7}))
    grid = FastPollGrid(scripted)
    started = time.monotonic()
    replies = grid.send_and_receive([message(7)], timeout=1.0)
    took = time.monotonic() - started
    scripted.release.set()
    assert replies == [] and took < 1.0 + 5.0 + 1.0
    assert "reply pull abandoned" in caplog.text
    assert grid.destinations == {"m0": 7}
