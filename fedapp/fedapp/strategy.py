"""FedAvg that can never hang: node waits and rounds have deadlines.

Flower's FedAvg samples nodes with a loop that waits forever for `min_available_nodes`;
a Pi that dies mid-campaign would then hold the nightly run hostage. Here the wait for
nodes is bounded, a round ends at its timeout with whatever replies came in, and a round
with fewer completed nodes than required fails the campaign with a reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from pydantic import ValidationError

from .progress import Participant


class CampaignError(RuntimeError):
    """A campaign cannot go on; the message is the reason recorded for it."""


def wait_for_nodes(grid: Grid, want: int, need: int, wait_seconds: float) -> list[int]:
    """Wait up to wait_seconds for `want` nodes; accept >= `need` at the deadline."""
    deadline = time.monotonic() + wait_seconds
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= want:
            return nodes
        if time.monotonic() >= deadline:
            if len(nodes) >= need:
                return nodes
            raise CampaignError(
                f"only {len(nodes)} node(s) online after {wait_seconds:.0f}s; need at least {need}"
            )
        time.sleep(1.0)


def array_bytes(arrays: ArrayRecord) -> int:
    return sum(len(arr.data) for arr in arrays.values())


class DeadlineFedAvg(FedAvg):
    def __init__(self, *, min_nodes: int, min_completed: int, node_wait_seconds: float, log) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0,
                         min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1)
        self.min_nodes = min_nodes
        self.min_completed = min_completed
        self.node_wait_seconds = node_wait_seconds
        self.log = log
        self.rounds: dict[int, dict] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = wait_for_nodes(grid, self.min_nodes, self.min_completed, self.node_wait_seconds)
        config["server-round"] = server_round
        self.rounds[server_round] = {
            "sent_to": len(nodes),
            "bytes_down_per_agent": array_bytes(arrays),
            "started": time.time(),
        }
        self.log.info("round_started", round=server_round, nodes=len(nodes))
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, nodes, "train")

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg over the replies that trained; the round's facts go to `self.rounds`."""
        replies = list(replies)
        info = self.rounds[server_round]
        failed = [m for m in replies if m.has_error()]
        for m in failed:
            self.log.warning("node_failed", round=server_round, node=m.metadata.src_node_id,
                             reason=m.error.reason)
        ok: list[Message] = []
        participants: list[Participant] = []
        for m in (m for m in replies if not m.has_error()):
            participant = self._participant(server_round, m)
            if participant is None:
                failed.append(m)
                continue
            ok.append(m)
            participants.append(participant)
        missing = info["sent_to"] - len(replies)
        if missing:
            self.log.warning("round_timeout", round=server_round, missing_replies=missing)
        if len(ok) < self.min_completed:
            raise CampaignError(
                f"round {server_round}: {len(ok)} node(s) completed training, need "
                f"{self.min_completed} ({len(failed)} failed, {missing} timed out)"
            )
        info.update(participants=participants, failed=len(failed), timed_out=missing,
                    bytes_up_per_agent=max(p.bytes_up for p in participants))
        return super().aggregate_train(server_round, ok)

    def _participant(self, server_round: int, m: Message) -> Participant | None:
        """The reply as a Participant, or None (logged) when it is not a usable reply."""
        extra = m.content["info"] if "info" in m.content else ConfigRecord()
        agent = str(extra.get("agent", m.metadata.src_node_id))
        skipped = []
        for line in str(extra.get("skipped", "")).splitlines():
            path, _, reason = line.partition("\t")
            skipped.append((path, reason))
            self.log.warning("agent_skipped_file", round=server_round, agent=agent,
                             file=path, reason=reason)
        try:
            return Participant.model_validate({
                **dict(m.content["metrics"]), "agent": agent, "node_id": m.metadata.src_node_id,
                "bytes_up": array_bytes(m.content["arrays"]), "skipped": skipped,
            })
        except (KeyError, ValidationError) as exc:
            self.log.warning("node_reply_unusable", round=server_round, agent=agent,
                             reason=str(exc)[:500])
            return None
