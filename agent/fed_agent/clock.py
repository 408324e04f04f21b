"""Is this Pi's clock right? Checked before the SuperNode starts, and reported in every heartbeat.

Why wait at all: a Pi boots with a stale clock until NTP syncs (no RTC), and Flower's node
authentication refuses a node 5 s or more ahead of the SuperLink (fed_common.clock). So the
agent holds the SuperNode back, with a STATUS line saying so, until the clock is synchronised
or `clock.wait_for_sync_seconds` have passed; then it starts anyway, with a warning. Why not
wait forever: a Pi whose NTP is blocked may still have a good enough clock (fake-hwclock
restores the time of the last shutdown, a person may have set it), a SuperNode that is refused
keeps retrying and works once the clock is set, and the heartbeat reports the offset, so the
fleet view says why that Pi does not train instead of showing a Pi that never started.

Where the answer comes from (`clock.check`): `timedatectl show` (systemd-timedated: the
kernel's error estimate, and whether an NTP service is active), else the kernel's own adjtimex
status (STA_UNSYNC / TIME_ERROR) through ctypes. The agent waits only when something can
still synchronise the clock: timedatectl says NTP=yes (an NTP service is running), or
`check: adjtimex` was asked for. That keeps hosts that can never sync from waiting: a
systemd-nspawn container (the system test's Pis: no systemd-timesyncd, and the clock is the
host's), a build machine without systemd (timedatectl fails, the kernel says unsynchronised
and nothing will change it). With neither check available the answer is "unknown" and
nothing waits. Under the unit's ProtectClock=yes adjtimex fails with EPERM: "unknown" too,
which is why timedatectl is asked first; it answers in the unit's sandbox (both measured on
a system-test host with benchmarks/clock_probe_nspawn.sh).

The main loop asks `may_start_supernode()` once a tick; it re-runs the check at most every
RECHECK_SECONDS (timedatectl answers in milliseconds; its timeout is 3 s, well inside the
watchdog's 30 s), so the inbox, heartbeats and watchdog pings go on while it waits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable, Literal, Optional

from fed_common.clock import ClockStatus, SyncSource, Synchronised, clock_problems, offset_problem
from fed_common.config import STRICT
from pydantic import BaseModel, Field

RECHECK_SECONDS = 5.0  # while waiting
REFRESH_SECONDS = 30.0  # once started: the heartbeat's reading may be this old
TIMEDATECTL_TIMEOUT = 3.0
STA_UNSYNC = 0x0040  # <linux/timex.h>
TIME_ERROR = 5  # adjtimex's return value while the clock is not synchronised
# What OpenSSL says (via Python's ssl) of a certificate checked with a clock far off.
CLOCK_TLS_ERRORS = ("certificate is not yet valid", "certificate has expired")


class ClockSection(BaseModel):
    model_config = STRICT
    check: Literal["auto", "timedatectl", "adjtimex", "off"] = Field(
        "auto", description="How the agent learns whether the clock is synchronised: auto asks timedatectl, "
        "then the kernel (adjtimex); off: not checked (reported as unknown, never waited for).")
    wait_for_sync_seconds: float = Field(
        300.0, ge=0, le=3600, description="Before starting the SuperNode, wait at most this long (seconds, "
        "0-3600; 0: never) for the clock to synchronise, then start anyway with a warning. Waited for only "
        "while something can sync it: timedatectl reports an active NTP service, or check is adjtimex.")


@dataclass(frozen=True)
class SyncReading:
    synchronised: Synchronised
    source: SyncSource
    can_sync: bool = False  # something on this host will synchronise the clock: worth waiting for


UNKNOWN = SyncReading("unknown", "none")
Run = Callable[..., subprocess.CompletedProcess]


def timedatectl_reading(run: Run = subprocess.run) -> Optional[SyncReading]:
    """systemd-timedated's answer; None where timedatectl is missing or cannot reach it (no
    systemd as PID 1, no D-Bus)."""
    try:
        done = run(["timedatectl", "show", "-p", "NTPSynchronized", "-p", "NTP"], capture_output=True,
                   text=True, timeout=TIMEDATECTL_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    values = dict(line.partition("=")[::2] for line in done.stdout.splitlines())
    synced = values.get("NTPSynchronized")
    if done.returncode != 0 or synced not in ("yes", "no"):
        return None
    return SyncReading(synced, "timedatectl", can_sync=values.get("NTP") == "yes")


class _Timex(ctypes.Structure):
    """struct timex (<sys/timex.h>, 64-bit and 32-bit alike: longs and ints in this order)."""
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("rest", ctypes.c_byte * 256)]  # constant ... tai and padding: never read here


def kernel_adjtimex() -> tuple[int, int]:
    """(adjtimex's return value, status bits) with modes 0: a read, changes nothing."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    timex = _Timex()
    return libc.adjtimex(ctypes.byref(timex)), timex.status


def adjtimex_reading(call: Callable[[], tuple[int, int]] = kernel_adjtimex,
                     can_sync: bool = False) -> Optional[SyncReading]:
    """The kernel's word; None where the call is refused (EPERM under ProtectClock) or missing."""
    try:
        state, status = call()
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    synced = state != TIME_ERROR and not status & STA_UNSYNC
    return SyncReading("yes" if synced else "no", "adjtimex", can_sync=can_sync)


def sync_check(check: str, run: Run = subprocess.run,
               adjtimex: Callable[[], tuple[int, int]] = kernel_adjtimex) -> Callable[[], SyncReading]:
    """The `clock.check` setting as a function answering a SyncReading (never raising)."""
    def read() -> SyncReading:
        if check == "off":
            return UNKNOWN
        if check in ("auto", "timedatectl") and (reading := timedatectl_reading(run)):
            return reading
        if check in ("auto", "adjtimex") and (reading := adjtimex_reading(adjtimex, check == "adjtimex")):
            return reading
        return UNKNOWN
    return read


def date_offset(date_header: Optional[str], sent_at: float, received_at: float) -> Optional[tuple[float, float]]:
    """(offset, error) of the local clock against a reply's `Date`, from the request's midpoint.

    Date is whole seconds, truncated (RFC 9110), and a server may cache it: uvicorn refreshes
    its Date once a second (nginx on every pass of its event loop). So the server's time at
    the reply is in [Date, Date + 2 s): taken as Date + 1 s, with an error bound of 1 s plus
    half the round trip. Measured here: uvicorn's Date put a right clock at +0.5 s and a clock
    62 s ahead at +63.2 s with the Date + 0.5 s estimate, outside its own +-0.5 s bound."""
    try:
        server = parsedate_to_datetime(date_header).timestamp() + 1.0
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    round_trip = max(0.0, received_at - sent_at)
    return round((sent_at + received_at) / 2 - server, 2), round(1.0 + round_trip / 2, 2)


class ClockWatch:
    """The clock gate for the SuperNode, and the clock part of the heartbeat."""

    def __init__(self, section: ClockSection, log, read: Optional[Callable[[], SyncReading]] = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.bound, self.log, self.monotonic = section.wait_for_sync_seconds, log, monotonic
        self.read = read or sync_check(section.check)
        self.started = monotonic()
        self.reading: SyncReading = UNKNOWN
        self.checked_at: Optional[float] = None
        self.opened = False
        self.offset: Optional[tuple[float, float]] = None
        self.tls_problem: Optional[str] = None  # the last heartbeat failed TLS the way a wrong clock does
        self._lock = threading.Lock()

    def _refresh(self, older_than: float) -> SyncReading:
        with self._lock:
            now = self.monotonic()
            if self.checked_at is None or now - self.checked_at >= older_than:
                self.reading, self.checked_at = self.read(), now
            return self.reading

    def waited(self) -> float:
        return self.monotonic() - self.started

    def may_start_supernode(self) -> bool:
        """False while the clock is unsynchronised, something can still sync it and the
        bound has not passed; then True for good."""
        if self.opened:
            return True
        reading = self._refresh(RECHECK_SECONDS)
        waited = round(self.waited(), 1)
        if reading.synchronised == "no" and reading.can_sync and waited < self.bound:
            return False
        self.opened = True
        if reading.synchronised == "no" and reading.can_sync:
            self.log.warning("clock_not_synchronised_starting_anyway", waited_seconds=waited,
                             bound_seconds=self.bound, source=reading.source)
        else:
            self.log.info("clock_checked", synchronised=reading.synchronised, source=reading.source,
                          waited_seconds=waited)
        return True

    def record_reply_date(self, date_header: Optional[str], sent_at: float, received_at: float) -> None:
        """A heartbeat reply's Date, timed by the sender: the offset for the next heartbeat."""
        measured = date_offset(date_header, sent_at, received_at)
        if measured is not None:
            self.offset = measured
        self.tls_problem = None

    def record_heartbeat_error(self, error: str) -> None:
        """A failed heartbeat. A certificate refused as not yet valid (or expired) is what a
        clock far behind (or ahead) looks like, and no Date can be read then: the STATUS line
        says so, with this clock's time, since the coordinator hears nothing from this Pi."""
        words = next((words for words in CLOCK_TLS_ERRORS if words in error), None)
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.tls_problem = f"heartbeat TLS: {words} at this clock ({now}): is the clock wrong?" if words else None

    def status(self) -> ClockStatus:
        reading = self.reading if not self.opened else self._refresh(REFRESH_SECONDS)
        offset, error = self.offset or (None, None)
        return ClockStatus(synchronised=reading.synchronised, source=reading.source, waiting=not self.opened,
                           offset_seconds=offset, offset_error_seconds=error)

    def status_parts(self) -> tuple[list[str], list[str]]:
        """For the STATUS line: what goes first (the wait, an offset Flower refuses) and what
        goes last (a clock not synchronised, once started anyway)."""
        tls = [self.tls_problem] if self.tls_problem else []
        if not self.opened:
            return [f"waiting for the clock to synchronise (NTP): {self.waited():.0f} s "
                    f"of at most {self.bound:g} s"] + tls, []
        status = self.status()
        refused = offset_problem(status.offset_seconds)
        rest = [problem for problem in clock_problems(status) if problem != refused]
        return ([refused] if refused else []) + tls, rest
