"""Backbone and trainer to the nodes that lack them, found out by the first train message.

Why not ask first: a query before round 1 is a whole Flower round trip (a SuperNode pull of
up to 3 s, a fresh `flwr-clientapp` process per node, the ServerApp's poll) that nearly
every night answers "nothing missing", since the artifacts change only with the backbone.
So round 1's train message carries the hashes (TrainConfig.backbone_sha/trainer_sha), a
node that lacks one replies with a `missing` record instead of training, and only those
nodes get the bytes (an `artifacts` query) and the train message again, in the same round.
A node that lacks nothing costs nothing extra; one that does costs two more trips, once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fed_common.files import sha256_file
from flwr.app import ConfigRecord, Message, RecordDict

from .artifacts import ARTIFACT_NAMES

MISSING = "missing"  # the reply record of a node that lacks an artifact


def missing_reply(msg: Message, agent: str, missing: list[str]) -> Message:
    """The ClientApp's answer to a train message whose artifacts it does not hold."""
    record = ConfigRecord({"agent": agent, MISSING: ",".join(missing)})
    return Message(RecordDict({MISSING: record}), reply_to=msg)


def lacking_of(reply: Message) -> list[str] | None:
    """The artifact hashes a reply says its node lacks; None for any other reply."""
    if reply.has_error() or MISSING not in reply.content.config_records:
        return None
    return [sha for sha in str(reply.content.config_records[MISSING].get(MISSING, "")).split(",") if sha]


class ArtifactShipper:
    """The campaign's artifact files, their hashes, and what was sent to which node.

    `follow_up` runs inside the round's exchange (grid_poll.FastPollGrid): a `missing` reply
    is answered at once with the bytes, and a node that stored them gets its train message
    again, so one slow or dead node never holds back another's shipping; each follow-up has
    the round's timeout again (grid_poll.FastPollGrid), as the separate query had."""

    def __init__(self, files: dict[str, Path], log) -> None:
        self.files, self.log = files, log
        self.shas = {name: sha256_file(path) for name, path in files.items()}
        self.round_shipped: dict[int, int] = {}  # node id -> bytes sent this round
        self._offered: dict[int, int] = {}  # node id -> bytes of the offer in flight

    def follow_up(self, reply: Message, retrain: Callable[[int], Message]) -> Message | None:
        """The next message for this reply's node, or None when the reply is its answer."""
        node = reply.metadata.src_node_id
        missing = lacking_of(reply)
        if missing and node not in self._offered:
            return self._offer(node, missing)
        if reply.has_error() or "artifacts" not in reply.content.config_records:
            return None
        size = self._offered.pop(node, 0)
        still = str(reply.content["artifacts"].get("missing", ""))
        if still:
            self.log.warning("artifact_ship_failed", node=node, missing=still[:300])
            return None  # its reply stands: the strategy counts the node failed, with this reason
        self.round_shipped[node] = self.round_shipped.get(node, 0) + size
        self.log.info("artifacts_shipped", node=node, bytes=size)
        return retrain(node)

    def new_round(self) -> None:
        self.round_shipped, self._offered = {}, {}

    def _offer(self, node: int, missing: list[str]) -> Message:
        names = [name for name in ARTIFACT_NAMES if self.shas[name] in missing]
        record = {f"{name}-sha": sha for name, sha in self.shas.items()}
        for name in names:
            record[f"{name}-bytes"] = self.files[name].read_bytes()
        self._offered[node] = sum(self.files[name].stat().st_size for name in names)
        return Message(RecordDict({"artifacts": ConfigRecord(record)}), node, "query.artifacts")
