"""The campaign strategy: it can never hang, and no single node can spoil a round.

Flower's FedAvg samples nodes with a loop that waits forever for `min_available_nodes`;
a Pi that dies mid-campaign would then hold the nightly run hostage. Here the wait for
nodes is bounded, a round ends at its timeout with whatever replies came in, every reply
is checked before it counts (aggregation.py), and a round with fewer good replies than
required fails the campaign with a reason. With `nodes_per_round`, each round trains a
sample (sampling.py) of the online nodes. A node that replies to round 1 that it lacks the
campaign's artifacts gets them and the train message again (artifact_shipping.py). A node that declines a train message for its
health (a `declined` record: too hot, under-voltage) is counted apart, as declined, never as
failed: the round goes on with the others. What happened to each node is kept per round
(`RoundLedger`) for the progress events.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from pydantic import ValidationError

from .aggregation import (Aggregation, ArraySpec, CheckedReply, PseudoLabelUse, ReplyRejected, aggregate,
                          array_specs, check_reply)
from .artifact_shipping import ArtifactShipper, lacking_of
from .progress import NodeDecline, NodeFailure, Participant
from .sampling import NodeSampler


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


@dataclass
class RoundLedger:
    """One round's facts, filled in by configure_train and aggregate_train."""

    sent_to: int
    bytes_down_per_agent: int
    sent: dict[str, ArraySpec]
    participants: list[Participant] = field(default_factory=list)
    failures: list[NodeFailure] = field(default_factory=list)
    declines: list[NodeDecline] = field(default_factory=list)
    timed_out: int = 0
    shipped_bytes: dict[str, int] = field(default_factory=dict)  # node id -> artifact bytes sent

    def event_fields(self) -> dict:
        """The RoundEvent fields (progress.py) this ledger knows."""
        fields = {"sent_to": self.sent_to, "bytes_down_per_agent": self.bytes_down_per_agent}
        if self.shipped_bytes:
            fields["shipped_bytes"] = self.shipped_bytes
        if self.participants or self.failures or self.declines:
            fields.update(participants=self.participants, failures=self.failures,
                          failed=len(self.failures), declines=self.declines, declined=len(self.declines),
                          timed_out=self.timed_out,
                          bytes_up_per_agent=max((p.bytes_up for p in self.participants), default=0))
        return fields


class DeadlineFedAvg(FedAvg):
    def __init__(self, *, min_nodes: int, min_completed: int, node_wait_seconds: float, log,
                 aggregation: Aggregation = Aggregation.FEDAVG, trim_fraction: float = 0.2,
                 max_examples: int = 100_000, pseudo: PseudoLabelUse = PseudoLabelUse(),
                 sampler: NodeSampler | None = None, shipper: ArtifactShipper | None = None) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0,
                         min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1)
        self.sampler = sampler or NodeSampler(0, 0, "")
        self.shipper = shipper
        self._grid: Grid | None = None
        self._record: RecordDict | None = None
        self.min_nodes = min_nodes
        self.min_completed = min_completed
        self.node_wait_seconds = node_wait_seconds
        self.log = log
        self.aggregation, self.trim_fraction, self.max_examples = aggregation, trim_fraction, max_examples
        self.pseudo = pseudo
        self.rounds: dict[int, RoundLedger] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        online = wait_for_nodes(grid, self.min_nodes, self.min_completed, self.node_wait_seconds)
        nodes = self.sampler.choose(online)
        config["server-round"] = server_round
        self.rounds[server_round] = RoundLedger(len(nodes), array_bytes(arrays), array_specs(arrays))
        self.log.info("round_started", round=server_round, nodes=len(nodes), online=len(online))
        if self.shipper is not None:
            self.shipper.new_round()
        self._grid = grid
        self._record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(self._record, nodes, "train")

    def follow_up(self, reply: Message) -> Message | None:
        """During a round's exchange: artifacts for a node that lacks them, then its train
        message again (artifact_shipping.py); None when `reply` is the node's answer."""
        if self.shipper is None or self._record is None:
            return None
        record = self._record
        return self.shipper.follow_up(reply, lambda node: next(iter(
            self._construct_messages(record, [node], "train"))))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies that pass the checks; the rest are failed nodes, with reasons."""
        replies = list(replies)
        ledger = self.rounds[server_round]
        if self.shipper is not None:
            ledger.shipped_bytes = {str(node): size for node, size in self.shipper.round_shipped.items()}
        good: list[CheckedReply] = []
        for m in replies:
            node = self._node_of(m)
            agent = _agent_of(m, node)
            reason = m.error.reason if m.has_error() else None
            if reason is None and (lacking_of(m) is not None or "artifacts" in m.content.config_records):
                reason = "could not store the campaign's artifacts (backbone, trainer)"
            if reason is None and "declined" in m.content.config_records:
                self._declined(server_round, ledger, m, agent)
                continue
            if reason is None:
                try:
                    checked = check_reply(m.content, ledger.sent, self.max_examples, self.pseudo)
                    participant = self._participant(server_round, m, agent)
                except ReplyRejected as exc:
                    reason = f"reply rejected: {exc}"
                else:
                    good.append(checked)
                    ledger.participants.append(participant)
                    continue
            ledger.failures.append(NodeFailure(agent=agent, node_id=node, reason=reason[:500]))
            self.log.warning("node_failed", round=server_round, agent=agent, node=node, reason=reason[:500])
        ledger.timed_out = ledger.sent_to - len(replies)
        if ledger.timed_out > 0:
            self.log.warning("round_timeout", round=server_round, missing_replies=ledger.timed_out)
        if len(good) < self.min_completed:
            raise CampaignError(
                f"round {server_round}: {len(good)} node(s) completed training, need "
                f"{self.min_completed} ({len(ledger.failures)} failed, {len(ledger.declines)} declined, "
                f"{ledger.timed_out} timed out)"
                + "".join(f"; {f.agent}: {f.reason}" for f in ledger.failures[:3])
                + "".join(f"; {d.agent} declined: {d.reason}" for d in ledger.declines[:3]))
        return aggregate(good, self.aggregation, self.trim_fraction)

    def _node_of(self, m: Message) -> int:
        """The node a reply is about (FastPollGrid knows where each message went)."""
        destination_of = getattr(self._grid, "destination_of", None)
        return destination_of(m) if destination_of else m.metadata.src_node_id

    def _declined(self, server_round: int, ledger: RoundLedger, m: Message, agent: str) -> None:
        reason = str(m.content.config_records["declined"].get("reason", "")).strip() or "no reason given"
        ledger.declines.append(NodeDecline(agent=agent, node_id=m.metadata.src_node_id, reason=reason[:500]))
        self.log.warning("node_declined", round=server_round, agent=agent, node=m.metadata.src_node_id,
                         reason=reason[:500])

    def _participant(self, server_round: int, m: Message, agent: str) -> Participant:
        """The reply as a Participant (its metrics typed); ReplyRejected when they do not fit."""
        extra = m.content.config_records.get("info", ConfigRecord())
        skipped = []
        for line in str(extra.get("skipped", "")).splitlines()[:1000]:
            path, _, reason = line.partition("\t")
            skipped.append((path[:300], reason[:300]))
            self.log.warning("agent_skipped_file", round=server_round, agent=agent,
                             file=path[:300], reason=reason[:300])
        try:
            return Participant.model_validate({
                **dict(m.content.metric_records["metrics"]), "agent": agent,
                "node_id": m.metadata.src_node_id, "bytes_up": array_bytes(m.content["arrays"]),
                "skipped": skipped,
            })
        except ValidationError as exc:
            raise ReplyRejected(str(exc).replace("\n", " ")[:400]) from exc


def _agent_of(m: Message, node: int) -> str:
    """The agent name the node gives (bounded; it is the node's word), else its node id."""
    for record in ("info", "declined", "missing", "artifacts"):
        if m.has_content() and record in m.content.config_records:
            name = str(m.content.config_records[record].get("agent", "")).strip()
            if name:
                return name[:64]
    return str(node)
