"""progress.jsonl: the ServerApp's live report to the coordinator, one typed event per line.

Why typed: the ServerApp (in `flwr-serverapp`) and the coordinator (watching the campaign
folder) are different processes that only share this file. Each event is a pydantic model,
so a renamed field fails in a test instead of showing up as a missing round on the
dashboard. The JSON field names are the ones the coordinator has always read (`round`,
`server_accuracy`, `participants[].num-examples`, ...); the writer and the readers both go
through `parse_event`/`Progress` so they cannot drift apart.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

log = logging.getLogger("fedapp.progress")
_EVENT = ConfigDict(extra="forbid", populate_by_name=True)


class _Event(BaseModel):
    model_config = _EVENT
    time: float = Field(default_factory=time.time, description="when the ServerApp wrote it")


class ArtifactsShipped(BaseModel):
    """Which artifact hashes the campaign uses and how many bytes went to which node."""

    model_config = _EVENT
    shas: dict[str, str] = Field(description="artifact name (backbone, trainer) -> SHA-256")
    shipped_bytes: dict[str, int] = Field(default_factory=dict, description="node id -> bytes sent")


class Participant(BaseModel):
    """One node's completed training round, from its reply (metric names as the node sends).

    Unknown metrics are ignored rather than refused: a Pi may run another fedapp version,
    and an extra metric must not cost its round."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)
    agent: str = Field(max_length=64)
    node_id: int
    bytes_up: int = Field(ge=0)
    skipped: list[tuple[str, str]] = Field(default_factory=list, description="(file, reason)")
    num_examples: int = Field(alias="num-examples", ge=0)
    # The labels it trained on: a person's, and pseudo labels (with use_pseudo_labels); absent
    # from a ClientApp that does not say (aggregation.py checks them against num-examples).
    human_examples: Optional[int] = Field(None, alias="human-examples", ge=0)
    pseudo_examples: Optional[int] = Field(None, alias="pseudo-examples", ge=0)
    train_loss: Optional[float] = Field(None, alias="train-loss")
    train_accuracy: Optional[float] = Field(None, alias="train-accuracy")
    test_accuracy: Optional[float] = Field(None, alias="test-accuracy")
    test_examples: Optional[int] = Field(None, alias="test-examples")
    skipped_files: Optional[int] = Field(None, alias="skipped-files")
    embed_seconds: Optional[float] = Field(None, alias="embed-seconds")
    train_seconds: Optional[float] = Field(None, alias="train-seconds")
    # embeddings this round computed vs found cached (the agent embeds at ingest: computed 0)
    embeddings_computed: Optional[int] = Field(None, alias="embeddings-computed", ge=0)
    embeddings_reused: Optional[int] = Field(None, alias="embeddings-reused", ge=0)


class NodeFailure(BaseModel):
    """A node that replied but does not count this round: an error, or a reply rejected by
    the checks in aggregation.py (the reason says which field and why)."""

    model_config = _EVENT
    agent: str = Field(max_length=64)
    node_id: int
    reason: str = Field(max_length=500)


class NodeDecline(NodeFailure):
    """A node that declined the train message for its own health (a Pi too hot or
    under-voltage now, fed_common.pi_health): not a failure, it trains again when it is well."""


class StartedEvent(_Event):
    event: Literal["started"] = "started"
    nodes: int = Field(ge=0, description="nodes the campaign started with")
    artifacts: ArtifactsShipped


class RoundEvent(_Event):
    """Server evaluation after a round; round 0 is the initial head (no training fields)."""

    event: Literal["round"] = "round"
    round: int = Field(ge=0)
    server_accuracy: float = Field(ge=0, le=1)
    server_loss: float
    sent_to: Optional[int] = Field(None, ge=0)
    bytes_down_per_agent: Optional[int] = Field(None, ge=0)
    participants: list[Participant] = Field(default_factory=list)
    failures: list[NodeFailure] = Field(default_factory=list, description="who failed and why")
    failed: Optional[int] = Field(None, ge=0, description="nodes that replied with an error or were rejected")
    declines: Optional[list[NodeDecline]] = Field(None, description="who declined to train and why")
    declined: Optional[int] = Field(None, ge=0, description="nodes that declined (too hot, under-voltage)")
    timed_out: Optional[int] = Field(None, ge=0, description="nodes that did not reply in time")
    bytes_up_per_agent: Optional[int] = Field(None, ge=0)
    shipped_bytes: Optional[dict[str, int]] = Field(None, description="node id -> artifact bytes "
                                                    "sent this round (to nodes that lacked them)")


class FailedEvent(_Event):
    event: Literal["failed"] = "failed"
    reason: str


class CompletedEvent(_Event):
    """The campaign's last round was `rounds`; early stopping names the round it converged at."""

    event: Literal["completed"] = "completed"
    rounds: int = Field(ge=0, description="rounds run")
    converged_round: Optional[int] = Field(None, ge=0, description="early stopping: the last round "
                                           "whose server loss improved (absent: ran all rounds)")
    reason: Optional[str] = Field(None, max_length=500, description="why it stopped before the maximum")


ProgressEvent = Annotated[Union[StartedEvent, RoundEvent, FailedEvent, CompletedEvent],
                          Field(discriminator="event")]
_ADAPTER: TypeAdapter[ProgressEvent] = TypeAdapter(ProgressEvent)


def event_json(event: BaseModel) -> str:
    """One line of progress.jsonl (metric aliases, absent optional fields left out)."""
    return event.model_dump_json(by_alias=True, exclude_none=True)


def parse_event(line: str | bytes) -> StartedEvent | RoundEvent | FailedEvent | CompletedEvent:
    """The typed event of one line; ValueError (pydantic's) says which field is wrong."""
    return _ADAPTER.validate_json(line)


class Progress:
    """Appends events to progress.jsonl; one short write per line, so a reader sees whole lines."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def emit(self, event: BaseModel) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(event_json(event) + "\n")


def read_progress(path: str | Path, offset: int = 0) -> tuple[list, int]:
    """Events from byte `offset` on and the offset to read from next time.

    A last line without its newline is still being written: it is left for the next call.
    A complete line that does not parse is logged and skipped, never raised: one bad line
    must not stop the coordinator from following the rest of the campaign."""
    path = Path(path)
    if not path.is_file():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    events = []
    for line in complete.splitlines():
        if not line.strip():
            continue
        try:
            events.append(parse_event(line))
        except ValueError as exc:
            log.warning("progress line skipped (%s): %.200r", str(exc).splitlines()[0], line)
    return events, offset + len(complete)
