"""Backbone and trainer to the nodes that lack them, found out by the first train message.

Why not ask first: a query before round 1 is a whole Flower round trip (a SuperNode pull of
up to 3 s, a fresh `flwr-clientapp` process per node, the ServerApp's poll) that nearly
every night answers "nothing missing", since the artifacts change only with the backbone.
So round 1's train message carries the hashes (TrainConfig.backbone_sha/trainer_sha), a
node that lacks one replies with a `missing` record instead of training, and only those
nodes get the bytes (an `artifacts` query) and the train message again, in the same round.
"""

from __future__ import annotations

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
    """The campaign's artifact files, their hashes, and what was sent to which node."""

    def __init__(self, files: dict[str, Path], log) -> None:
        self.files, self.log = files, log
        self.shas = {name: sha256_file(path) for name, path in files.items()}
        self.shipped_bytes: dict[int, int] = {}

    def ship(self, grid, lacking: dict[int, list[str]], timeout: float) -> list[int]:
        """Send each node the artifacts it lacks; the nodes that stored all of them."""
        messages, wanted = [], {}
        for node, missing in sorted(lacking.items()):
            names = [name for name in ARTIFACT_NAMES if self.shas[name] in missing]
            record = {f"{name}-sha": sha for name, sha in self.shas.items()}
            for name in names:
                record[f"{name}-bytes"] = self.files[name].read_bytes()
            wanted[node] = sum(self.files[name].stat().st_size for name in names)
            messages.append(Message(RecordDict({"artifacts": ConfigRecord(record)}), node, "query.artifacts"))
        stored = []
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.log.warning("artifact_ship_failed", node=node, reason=reply.error.reason[:300])
                continue
            still = str(reply.content["artifacts"].get("missing", ""))
            if still:
                self.log.warning("artifact_ship_failed", node=node, missing=still[:300])
                continue
            self.shipped_bytes[node] = self.shipped_bytes.get(node, 0) + wanted[node]
            stored.append(node)
        self.log.info("artifacts_shipped", nodes=stored, bytes=sum(wanted[node] for node in stored))
        return stored
