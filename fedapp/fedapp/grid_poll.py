"""A Grid whose `send_and_receive` looks for replies every 0.5 s instead of every 3 s.

Why: Flower 1.42's grid sleeps 3 s between pulls (`superlink/grid/http_grid.py`), so every
round trip of a campaign waits on average 1.5 s, up to 3 s, after the last reply is already
in the SuperLink. The same loop over the public `push_messages`/`pull_messages` with a
shorter pause costs the SuperLink one small local request per half second and nothing
else; Flower is not patched. The SuperNode's own 3 s pull pause is on the Pi, out of reach.
Each pull is bounded by the round's deadline too (`_pull`), which Flower's is not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from flwr.app import Message

POLL_SECONDS = 0.5
PULL_GRACE_SECONDS = 5.0  # a pull that started just before the deadline may finish
log = logging.getLogger("fedapp.grid_poll")


class FastPollGrid:
    """Wraps the ServerApp's grid; everything but `send_and_receive` goes straight through.

    `follow_up(reply)` (the strategy's, when set) may answer a reply with a next message to
    the same node; that node's final reply is then the one to the follow-up, which has the
    whole timeout again (how round 1 ships artifacts to the nodes that lack them: a Pi that
    must store 9.6 MB and then embed every photo needs the time it had as separate queries)."""

    def __init__(self, grid, poll_seconds: float = POLL_SECONDS,
                 follow_up: Callable[[Message], Message | None] | None = None) -> None:
        self._grid, self.poll_seconds, self.follow_up = grid, poll_seconds, follow_up
        self.destinations: dict[str, int] = {}  # message id -> the node it went to

    def destination_of(self, reply: Message) -> int:
        """The node a reply is about: the SuperLink's own error replies ("Node Unavailable")
        come from the SuperLink, not from the node the message was for."""
        return self.destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def _push(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        ids = list(self._grid.push_messages(messages))
        self.destinations.update(zip(ids, (msg.metadata.dst_node_id for msg in messages)))
        return ids

    def _pull(self, waiting: set[str], deadline: float | None) -> list[Message] | None:
        """One pull of the replies that are in, or None if it does not return by the deadline.

        Why a thread: Flower's pull fetches each reply's objects with retries for up to 2 h
        (PULL_MAX_TIME), and a SuperNode whose object push failed (SuperLink "database is
        locked" under load; Flower does not retry the push) leaves an object that never comes:
        the pull, and with it the round and the campaign, would wait that long. The stuck
        pull is left to Flower's own limit in its daemon thread; the round goes on."""
        outcome: dict = {}

        def pull() -> None:
            try:
                outcome["replies"] = list(self._grid.pull_messages(set(waiting)))
            except Exception as exc:  # noqa: BLE001 - raised again in the round's thread
                outcome["error"] = exc

        worker = threading.Thread(target=pull, name="pull-replies", daemon=True)
        worker.start()
        worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()) + PULL_GRACE_SECONDS)
        if "error" in outcome:
            raise outcome["error"]
        if "replies" not in outcome:
            log.warning("reply pull abandoned at the round's deadline (%d replies waiting): a reply's "
                        "objects never arrived", len(waiting))
            return None
        return outcome["replies"]

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        waiting = set(self._push(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            pulled = self._pull(waiting, deadline)
            if pulled is None:
                break  # what is still waiting counts as timed out
            for reply in pulled:
                waiting.discard(reply.metadata.reply_to_message_id)
                following = self.follow_up(reply) if self.follow_up else None
                if following is None:
                    replies.append(reply)
                else:  # the follow-up gets the whole timeout again, as a separate exchange would
                    waiting.update(self._push([following]))
                    if deadline is not None:
                        deadline = max(deadline, time.monotonic() + (timeout or 0.0))
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll_seconds)
        return replies
