"""When to run a federated campaign: pure decision logic, no threads, no I/O, no sleeping.

The service calls `Scheduler.decide(now, ...)` once a second and acts on the answer, so every
rule lives here and is tested with plain datetimes. Slots come from a cron expression read as
*wall-clock* time in an IANA zone; croniter only enumerates wall times (in a fake UTC, so it
never sees a DST rule) and zoneinfo maps them to instants. On the spring-forward night a wall
time that does not exist fires when the clock jumps (02:30 -> 03:00 local), and on the
fall-back night a repeated wall time fires once, at its first occurrence (like Vixie cron).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

UTC = timezone.utc
_STATE_VERSION = 1
_MAX_STEPS = 10_000  # cron steps per lookup; a 5-field cron never needs that many
_COUNT_CAP = 100  # missed slots counted for the reason text, no more


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = "0 2 * * *"  # when campaigns are due, in `timezone`
    timezone: str = "UTC"  # IANA name, zoneinfo
    random_delay_seconds: float = 900  # slot fires at slot + U(0, delay), like RandomizedDelaySec
    min_agents: int = 2  # fewer agents online -> skipped, retried within the window
    retry_interval_seconds: float = 600
    retry_window_seconds: float = 3 * 3600  # after slot time; past it the slot is given up
    catch_up: bool = True  # like systemd Persistent=true


def validate(cfg: ScheduleConfig) -> None:
    """Raise ValueError naming the bad field, so a config error fails at start, not at 02:00."""
    fields = cfg.cron.split() if isinstance(cfg.cron, str) else []
    if not fields or not (len(fields) == 5 or (len(fields) == 1 and fields[0].startswith("@"))):
        raise ValueError(f"cron: {cfg.cron!r} is not a 5-field cron expression")
    if not croniter.is_valid(cfg.cron):
        raise ValueError(f"cron: {cfg.cron!r} is not a valid cron expression")
    try:  # e.g. "0 0 31 2 *" parses but never fires
        croniter(cfg.cron, datetime(2000, 1, 1, tzinfo=UTC), ret_type=datetime).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron: {cfg.cron!r} never matches a date") from None
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"timezone: unknown time zone {cfg.timezone!r}") from None
    for name in ("random_delay_seconds", "retry_interval_seconds", "retry_window_seconds"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    if cfg.retry_interval_seconds <= 0:  # 0 would record a skip every second
        raise ValueError("retry_interval_seconds: must be > 0")
    if isinstance(cfg.min_agents, bool) or not isinstance(cfg.min_agents, int) or cfg.min_agents < 1:
        raise ValueError(f"min_agents: must be an integer >= 1, got {cfg.min_agents!r}")
    if cfg.retry_window_seconds < cfg.retry_interval_seconds:
        raise ValueError("retry_window_seconds: must be >= retry_interval_seconds, or no retry ever happens")
    if cfg.retry_window_seconds < cfg.random_delay_seconds:
        raise ValueError("retry_window_seconds: must be >= random_delay_seconds, "
                         "or a slot could be given up before its first try")


@dataclass
class Decision:
    action: str  # "idle" | "start" | "skip"
    slot: datetime | None  # the scheduled slot (aware, UTC) this decision is about
    reason: str
    catch_up: bool = False


def _utc(value: datetime, what: str = "now") -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


class Scheduler:
    """Holds which slot is being worked on; everything in it survives a restart via state()."""

    def __init__(self, cfg: ScheduleConfig, state: dict | None = None,
                 rng: random.Random | None = None) -> None:
        validate(cfg)
        self.cfg, self._tz, self._rng = cfg, ZoneInfo(cfg.timezone), rng or random.Random()
        self._last: datetime | None = None  # latest slot handled (or when the schedule began)
        self._delays: dict[str, float] = {}  # drawn delay per future slot, so a restart keeps it
        self._cur: dict | None = None  # the slot being waited for / retried
        self._notice: Decision | None = None  # a skip to report on the next decide()
        self._floor: datetime | None = None  # old mark kept when the schedule itself changed
        if state:
            try:
                self._load(state)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"state: not a scheduler state ({exc})") from None
        # A restart (state with a handled slot) is checked for missed slots on the first decide().
        self._restoring = self._last is not None

    # -- persistence ------------------------------------------------------------------------
    def state(self) -> dict:
        """JSON-serialisable snapshot; pass it back to __init__ after a restart."""
        cur = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in (self._cur or {}).items()}
        return {"version": _STATE_VERSION, "cron": self.cfg.cron, "timezone": self.cfg.timezone,
                "last_handled": self._last.isoformat() if self._last else None,
                "delays": dict(self._delays), "current": cur or None}

    def _load(self, state: dict) -> None:
        def when(text: str) -> datetime:
            return _utc(datetime.fromisoformat(text), "state")

        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"version {state.get('version')!r}")
        self._last = when(state["last_handled"]) if state.get("last_handled") else None
        if (state.get("cron"), state.get("timezone")) != (self.cfg.cron, self.cfg.timezone):
            self._floor, self._last = self._last, None  # schedule changed: afresh, no catch-up
            return
        self._delays = {when(k).isoformat(): float(v) for k, v in (state.get("delays") or {}).items()}
        if cur := state.get("current"):
            self._cur = {k: cur[k] for k in ("skips", "catch_up", "older", "problem")}
            self._cur.update({k: when(cur[k]) for k in ("slot", "next_try", "deadline")})

    # -- slot arithmetic ----------------------------------------------------------------------
    def _resolve(self, wall: datetime) -> datetime:
        """Naive local wall time -> UTC instant: first occurrence if repeated, jump end if skipped."""
        for _ in range(2 * 24 * 60):  # a gap is at most a day (Samoa skipped 2011-12-30)
            inst = wall.replace(tzinfo=self._tz, fold=0).astimezone(UTC)
            if inst.astimezone(self._tz).replace(tzinfo=None) == wall:
                return inst
            wall += timedelta(minutes=1)  # inside the spring-forward gap
        raise RuntimeError(f"time zone {self.cfg.timezone}: no valid time after {wall}")

    def _walls(self, start: datetime, backwards: bool):
        it = croniter(self.cfg.cron, start.replace(tzinfo=UTC), ret_type=datetime)
        for _ in range(_MAX_STEPS):
            yield (it.get_prev if backwards else it.get_next)(datetime).replace(tzinfo=None)
        raise RuntimeError(f"cron {self.cfg.cron!r}: no slot within {_MAX_STEPS} steps")

    def next_slot(self, t: datetime) -> datetime:
        """First slot strictly after instant t (_resolve is monotone, so start at t's wall time)."""
        for wall in self._walls(t.astimezone(self._tz).replace(tzinfo=None), backwards=False):
            if (inst := self._resolve(wall)) > t:
                return inst
        raise AssertionError("unreachable")

    def prev_slot(self, t: datetime) -> datetime:
        """Latest slot at or before t; the margin covers t in the second pass of a repeated hour."""
        wall = t.astimezone(self._tz).replace(tzinfo=None, fold=0)
        start = wall + (t - wall.replace(tzinfo=self._tz).astimezone(UTC)) + timedelta(seconds=1)
        for wall in self._walls(start, backwards=True):
            if (inst := self._resolve(wall)) <= t:
                return inst
        raise AssertionError("unreachable")

    def _label(self, slot: datetime) -> str:
        return f"nightly slot {slot.astimezone(self._tz):%Y-%m-%d %H:%M} {self.cfg.timezone}"

    # -- bookkeeping -----------------------------------------------------------------------
    @staticmethod
    def _record(slot: datetime, first_try: datetime, deadline: datetime, catch_up: bool = False,
                older: str = "0") -> dict:
        return {"slot": slot, "next_try": first_try, "deadline": deadline, "skips": 0,
                "catch_up": catch_up, "older": older, "problem": None}

    def _deadline(self, slot: datetime) -> datetime:
        """Retry window end, cut at the next slot so two slots are never pending at once."""
        return min(slot + timedelta(seconds=self.cfg.retry_window_seconds), self.next_slot(slot))

    def _normal(self, slot: datetime) -> dict:
        """Fire time = slot + a delay drawn once per slot and kept in state across restarts."""
        key = slot.isoformat()
        if key not in self._delays:
            self._delays[key] = self._rng.uniform(0, self.cfg.random_delay_seconds)
        return self._record(slot, slot + timedelta(seconds=self._delays[key]), self._deadline(slot))

    def _handled(self, slot: datetime) -> None:
        if self._last is None or slot > self._last:
            self._last = slot
        if self._cur and self._cur["slot"] <= self._last:
            self._cur = None
        self._delays = {k: v for k, v in self._delays.items() if datetime.fromisoformat(k) > self._last}

    def _missed(self, now: datetime, recent: datetime) -> dict:
        """Slots passed unwatched (downtime, clock jump): run once for the latest, drop the rest."""
        count, s = 0, self.next_slot(self._last)
        while s <= recent and count < _COUNT_CAP:
            count, s = count + 1, self.next_slot(s)
        plus = "+" if count >= _COUNT_CAP else ""
        if not self.cfg.catch_up:
            self._handled(recent)
            self._notice = Decision("skip", recent, f"{self._label(recent)}: {count}{plus} slot(s) "
                                    "missed while the service was down; catch-up disabled")
            return self._normal(self.next_slot(recent))
        if count > 1:
            self._handled(self.prev_slot(recent - timedelta(microseconds=1)))
        deadline = min(now + timedelta(seconds=self.cfg.retry_window_seconds), self.next_slot(now))
        return self._record(recent, now, deadline, catch_up=True, older=f"{count - 1}{plus}")

    def _sync(self, now: datetime) -> dict:
        if self._last is None:  # first start ever: no catch-up, begin with the next slot
            self._last = max(now, self._floor or now)
        if self._restoring:
            self._restoring = False
            recent = self.prev_slot(now)
            cur = self._cur
            if recent > self._last and not (cur and cur["slot"] == recent and now <= cur["deadline"]):
                self._cur = self._missed(now, recent)  # resume only a slot still inside its window
        if self._cur is None:
            slot = self.next_slot(self._last)
            if slot <= now:  # passed already: fine if it is the latest and its window is open
                recent = self.prev_slot(now)
                ok = recent == slot and now <= self._deadline(slot)
                self._cur = self._normal(slot) if ok else self._missed(now, recent)
            else:
                self._cur = self._normal(slot)
        return self._cur

    # -- API -------------------------------------------------------------------------------
    def next_fire_time(self, now: datetime) -> datetime:
        """When the next start attempt is due (<= now if decide() would try right away)."""
        now = _utc(now)
        cur = self._sync(now)
        if now > cur["deadline"]:
            return self._normal(self.next_slot(cur["slot"]))["next_try"]
        return cur["next_try"]

    def decide(self, now: datetime, agents_online: int, campaign_running: bool) -> Decision:
        """Start, skip (record it) or idle; a returned "start" has already consumed its slot."""
        now = _utc(now)
        cur = self._sync(now)
        if self._notice:
            notice, self._notice = self._notice, None
            return notice
        slot, catch_up = cur["slot"], cur["catch_up"]
        label = ("catch-up for " if catch_up else "") + self._label(slot)
        if now > cur["deadline"]:
            self._handled(slot)
            why = f"; last: {cur['problem']}" if cur["problem"] else ""
            return Decision("skip", slot, f"{label}: gave up after the retry window "
                            f"({cur['skips']} skip(s){why})", catch_up)
        if now < cur["next_try"]:
            what = "retry" if cur["skips"] else "fire"
            at = f"{cur['next_try'].astimezone(self._tz):%H:%M}"
            return Decision("idle", slot, f"waiting to {what} {label} at {at}", catch_up)
        if campaign_running:
            problem = "a campaign is already running"
        elif agents_online < self.cfg.min_agents:
            problem = f"only {agents_online} agent(s) online, need {self.cfg.min_agents}"
        else:
            self._handled(slot)  # never "start" twice, even if mark_started() never comes
            if catch_up:
                older = cur["older"]
                more = f"; {older} older missed slot(s) dropped" if older != "0" else ""
                return Decision("start", slot, f"{self._label(slot)} missed while the service was down "
                                f"(caught up once{more})", True)
            after = f" after {cur['skips']} skip(s)" if cur["skips"] else ""
            return Decision("start", slot, f"{label}{after}")
        interval = timedelta(seconds=self.cfg.retry_interval_seconds)  # next fire + k * interval > now
        nxt = cur["next_try"] + interval * ((now - cur["next_try"]) // interval + 1)
        cur.update(next_try=nxt, skips=cur["skips"] + 1, problem=problem)
        until = f"{cur['deadline'].astimezone(self._tz):%H:%M}"
        return Decision("skip", slot, f"{label}: {problem}; retrying until {until}", catch_up)

    def mark_started(self, slot: datetime) -> None:
        """The service started a campaign for `slot` (or ran one by hand): never start it again."""
        self._handled(_utc(slot, "slot"))
