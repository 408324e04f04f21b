"""The agent's clock in the heartbeat, and what a wrong one breaks, in words.

A Pi has no real-time clock: after a power cut it boots with the time fake-hwclock saved at
shutdown until NTP syncs. Flower's node authentication signs every Fleet API request with the
node's time, and the SuperLink refuses a signature whose age (SuperLink time minus signing
time) is outside -5 s .. +305 s, both ends excluded (Flower 1.42: `SYSTEM_TIME_TOLERANCE` 5 and
`TIMESTAMP_TOLERANCE` 300 in flwr/common/constant.py; the check is in
superlink/routers/fleet/node_auth.py for REST and in
server/superlink/fleet/grpc_rere/node_auth_server_interceptor.py for gRPC). So a Pi 5 s or more
ahead of the coordinator, or 305 s or more behind it, is refused on every request.

`ClockStatus` is what the agent reports: whether its clock is synchronised (and who said so),
whether it is holding the SuperNode back waiting for that, and its offset against the
coordinator, measured from the `Date` header of the previous heartbeat reply. `Date` has a
resolution of one second and servers cache it (uvicorn for up to a second), so the offset is
known to about a second plus half the round trip (`offset_error_seconds`). `clock_problems` is the one place the words are made, for the
fleet view, fedctl, the status page and the agent's own STATUS line.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

AHEAD_LIMIT_SECONDS = 5.0  # Flower refuses a signature from this far in the future (SYSTEM_TIME_TOLERANCE)
BEHIND_LIMIT_SECONDS = 305.0  # ... and one this old (TIMESTAMP_TOLERANCE + SYSTEM_TIME_TOLERANCE)
Synchronised = Literal["yes", "no", "unknown"]
SyncSource = Literal["timedatectl", "adjtimex", "none"]
Seconds = Annotated[float, Field(ge=-10**10, le=10**10)]


class ClockStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)
    synchronised: Synchronised = "unknown"
    source: SyncSource = "none"  # what answered `synchronised` (none: no check could run)
    waiting: bool = False  # the SuperNode is held back until the clock syncs (or the wait's bound)
    # Local time minus the coordinator's (positive: this clock is ahead); None before a reply with Date.
    offset_seconds: Optional[Seconds] = None
    offset_error_seconds: Optional[Annotated[float, Field(ge=0, le=3600)]] = None


def offset_problem(offset: Optional[float]) -> Optional[str]:
    """Flower's rule in words: `clock 62 s ahead: node authentication will fail`; None: within it."""
    if offset is None:
        return None
    if offset >= AHEAD_LIMIT_SECONDS:
        return f"clock {offset:.0f} s ahead: node authentication will fail"
    if offset <= -BEHIND_LIMIT_SECONDS:
        return f"clock {-offset:.0f} s behind: node authentication will fail"
    return None


def clock_problems(status: Optional[ClockStatus]) -> list[str]:
    """What is wrong with an agent's clock, in words (empty: nothing known to be wrong)."""
    if status is None:
        return []
    found = []
    if status.waiting:
        found.append("waiting for the clock to synchronise (NTP): SuperNode not started")
    elif status.synchronised == "no":
        found.append(f"clock not synchronised (NTP, {status.source})")
    problem = offset_problem(status.offset_seconds)
    return found + ([problem] if problem else [])
