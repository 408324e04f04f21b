"""Campaign scheduling rules, driven by an injected clock (plain datetimes) and seeded RNGs.

No sleeps, threads or I/O: every test walks a Scheduler through time by handing it datetimes.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from fed_coordinator.campaigns.schedule import Decision, ScheduleConfig, Scheduler, validate

UTC = timezone.utc
BERLIN = ScheduleConfig(timezone="Europe/Berlin")  # "0 2 * * *", delay 900, 2 agents, 600 s / 3 h
NO_DELAY = ScheduleConfig(timezone="Europe/Berlin", random_delay_seconds=0)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def restart(s: Scheduler, cfg: ScheduleConfig = BERLIN, seed: int = 999) -> Scheduler:
    """What the service does: state -> JSON (SQLite) -> a new Scheduler with a different RNG."""
    return Scheduler(cfg, json.loads(json.dumps(s.state())), rng=random.Random(seed))


def walk(s: Scheduler, start: datetime, end: datetime, step: float = 60, agents: int = 5,
         running: bool = False) -> list[tuple[datetime, Decision]]:
    """decide() every `step` seconds in [start, end]; returns the non-idle decisions."""
    out, t = [], start
    while t <= end:
        d = s.decide(t, agents, running)
        if d.action != "idle":
            out.append((t, d))
            if d.action == "start":
                s.mark_started(d.slot)
        t += timedelta(seconds=step)
    return out


def fire_time(s: Scheduler, now: datetime) -> datetime:
    return s.next_fire_time(now)


# -- nightly slot, time zone, DST ----------------------------------------------------------------
@pytest.mark.parametrize("day, slot_utc", [
    ((2026, 11, 29), at(2026, 11, 29, 1)),  # CET: 02:00 local is 01:00 UTC
    ((2026, 7, 15), at(2026, 7, 15, 0)),  # CEST: 02:00 local is 00:00 UTC
])
def test_nightly_fire_time_berlin(day, slot_utc):
    s = Scheduler(BERLIN, rng=random.Random(7))
    fire = fire_time(s, slot_utc - timedelta(hours=10))
    assert slot_utc <= fire <= slot_utc + timedelta(seconds=900)
    assert s.decide(slot_utc - timedelta(seconds=1), 5, False).action == "idle"
    if fire > slot_utc:
        assert s.decide(fire - timedelta(microseconds=1), 5, False).action == "idle"
    d = s.decide(fire, 5, False)
    assert (d.action, d.slot, d.catch_up) == ("start", slot_utc, False)
    assert d.slot.utcoffset() == timedelta(0)
    assert d.reason == f"nightly slot {day[0]}-{day[1]:02d}-{day[2]:02d} 02:00 Europe/Berlin"
    s.mark_started(d.slot)
    after = s.decide(fire + timedelta(seconds=1), 5, False)
    assert after.action == "idle" and after.slot == slot_utc + timedelta(days=1)


def test_dst_nights_fire_once_each():
    # 02:30 does not exist on 2026-03-29 (fires when the clock jumps, 03:00 CEST) and exists
    # twice on 2026-10-25 (fires once, at the first 02:30).
    s = Scheduler(ScheduleConfig(cron="30 2 * * *", timezone="Europe/Berlin", random_delay_seconds=0))
    assert s.next_slot(at(2026, 3, 28, 12)) == at(2026, 3, 29, 1, 0)
    assert s.next_slot(at(2026, 10, 24, 12)) == at(2026, 10, 25, 0, 30)
    assert s.next_slot(at(2026, 10, 25, 0, 30)) == at(2026, 10, 26, 1, 30)
    assert s.prev_slot(at(2026, 10, 25, 1, 45)) == at(2026, 10, 25, 0, 30)  # in the repeated hour
    starts = [d.slot for _, d in walk(s, at(2026, 10, 24, 12), at(2026, 10, 26, 12), step=300)]
    assert starts == [at(2026, 10, 25, 0, 30), at(2026, 10, 26, 1, 30)]


# -- random delay --------------------------------------------------------------------------------
def test_random_delay_within_bounds_and_kept_across_restart():
    slot, now = at(2026, 11, 29, 1), at(2026, 11, 28, 15)
    delays = []
    for seed in range(300):
        s = Scheduler(BERLIN, rng=random.Random(seed))
        fire = fire_time(s, now)
        assert slot <= fire <= slot + timedelta(seconds=900)
        delays.append((fire - slot).total_seconds())
        again = restart(s, seed=seed + 10_000)  # a different RNG must not redraw the delay
        assert fire_time(again, now + timedelta(hours=1)) == fire
        assert again.decide(fire - timedelta(seconds=1), 5, False).action == "idle"
        assert again.decide(fire, 5, False).action == "start"
    assert min(delays) < 60 and max(delays) > 840  # spread over the whole range
    assert len(set(delays)) == len(delays)


def test_zero_delay_fires_on_the_slot():
    s = Scheduler(NO_DELAY, rng=random.Random(1))
    assert fire_time(s, at(2026, 11, 28, 12)) == at(2026, 11, 29, 1)


# -- catch-up ------------------------------------------------------------------------------------
def test_one_catch_up_after_three_days_down():
    s = Scheduler(BERLIN, rng=random.Random(3))
    assert [d.action for _, d in walk(s, at(2026, 11, 28, 12), at(2026, 11, 29, 12))] == ["start"]
    saved = s.state()  # the service stops here (noon, 29 Nov) ...
    s = Scheduler(BERLIN, json.loads(json.dumps(saved)), rng=random.Random(4))
    back = at(2026, 12, 2, 12)  # ... and is back three days later: 30 Nov, 1 and 2 Dec missed
    d = s.decide(back, 5, False)
    assert (d.action, d.slot, d.catch_up) == ("start", at(2026, 12, 2, 1), True)
    assert "missed while the service was down" in d.reason and "2 older missed slot(s)" in d.reason
    s.mark_started(d.slot)
    nxt = fire_time(s, back)
    assert at(2026, 12, 3, 1) <= nxt <= at(2026, 12, 3, 1, 15)
    decisions = walk(s, back + timedelta(seconds=1), at(2026, 12, 3, 12), step=30)
    assert [(t >= nxt, d.action, d.slot, d.catch_up) for t, d in decisions] == [
        (True, "start", at(2026, 12, 3, 1), False)]


def test_catch_up_waits_for_agents_within_its_own_window():
    s = Scheduler(NO_DELAY, rng=random.Random(0))
    walk(s, at(2026, 11, 28, 12), at(2026, 11, 29, 12))
    s = restart(s, NO_DELAY)
    back = at(2026, 12, 1, 10)
    d = s.decide(back, 1, False)
    assert (d.action, d.catch_up) == ("skip", True) and "only 1 agent(s) online, need 2" in d.reason
    assert s.decide(back + timedelta(seconds=599), 5, False).action == "idle"
    d = s.decide(back + timedelta(seconds=600), 5, False)
    assert (d.action, d.slot, d.catch_up) == ("start", at(2026, 12, 1, 1), True)


def test_no_catch_up_on_first_start():
    s = Scheduler(BERLIN, rng=random.Random(5))
    now = at(2026, 11, 29, 1, 30)  # today's slot (01:00 UTC) passed before the service ever ran
    d = s.decide(now, 5, False)
    assert d.action == "idle" and d.slot == at(2026, 11, 30, 1)
    assert fire_time(s, now) >= at(2026, 11, 30, 1)
    assert [d.slot for _, d in walk(s, now, at(2026, 11, 30, 12))] == [at(2026, 11, 30, 1)]


def test_catch_up_disabled_reports_the_miss_once():
    cfg = ScheduleConfig(timezone="Europe/Berlin", catch_up=False)
    s = Scheduler(cfg, rng=random.Random(6))
    walk(s, at(2026, 11, 28, 12), at(2026, 11, 29, 12))
    s = restart(s, cfg)
    d = s.decide(at(2026, 12, 2, 12), 5, False)
    assert d.action == "skip" and "catch-up disabled" in d.reason and "3 slot(s) missed" in d.reason
    decisions = walk(s, at(2026, 12, 2, 12), at(2026, 12, 3, 12))
    assert [(d.action, d.slot) for _, d in decisions] == [("start", at(2026, 12, 3, 1))]


def test_restart_inside_the_window_resumes_instead_of_catching_up():
    s = Scheduler(BERLIN, rng=random.Random(8))
    fire = fire_time(s, at(2026, 11, 28, 12))
    assert s.decide(fire, 1, False).action == "skip"
    s = restart(s)  # crash 5 minutes after the first skip
    assert s.decide(fire + timedelta(seconds=300), 5, False).action == "idle"
    d = s.decide(fire + timedelta(seconds=600), 5, False)
    assert (d.action, d.catch_up) == ("start", False) and "after 1 skip(s)" in d.reason


def test_restart_before_the_fire_time_keeps_it():
    s = Scheduler(BERLIN, rng=random.Random(9))
    fire = fire_time(s, at(2026, 11, 28, 12))
    s.decide(at(2026, 11, 29, 0, 59), 5, False)
    s = restart(s)
    if fire > at(2026, 11, 29, 1):
        assert s.decide(at(2026, 11, 29, 1), 5, False).action == "idle"
    d = s.decide(fire, 5, False)
    assert (d.action, d.catch_up) == ("start", False)


# -- too few agents, retries, giving up ----------------------------------------------------------
def test_too_few_agents_skips_retries_at_the_interval_then_starts():
    s = Scheduler(BERLIN, rng=random.Random(10))
    fire = fire_time(s, at(2026, 11, 28, 12))
    d = s.decide(fire, 1, False)
    assert d.action == "skip" and d.slot == at(2026, 11, 29, 1)
    assert "only 1 agent(s) online, need 2; retrying until 05:00" in d.reason
    for k in range(1, 600):
        assert s.decide(fire + timedelta(seconds=k), 5, False).action == "idle"
    assert s.decide(fire + timedelta(seconds=600), 0, False).action == "skip"
    assert s.decide(fire + timedelta(seconds=900), 5, False).action == "idle"
    d = s.decide(fire + timedelta(seconds=1200), 2, False)
    assert (d.action, d.slot) == ("start", at(2026, 11, 29, 1)) and "after 2 skip(s)" in d.reason


def test_gives_up_after_the_window_and_moves_on():
    s = Scheduler(BERLIN, rng=random.Random(11))
    slot = at(2026, 11, 29, 1)
    fire = fire_time(s, at(2026, 11, 28, 12))
    decisions = walk(s, at(2026, 11, 28, 12), at(2026, 11, 29, 12), step=30, agents=1)
    deadline = slot + timedelta(hours=3)
    *retries, final = decisions
    for k, (t, _) in enumerate(retries):  # at the first 30 s tick after fire + k * interval
        assert fire + timedelta(seconds=600 * k) <= t < fire + timedelta(seconds=600 * k + 30)
    assert all(d.action == "skip" and t <= deadline for t, d in retries)
    assert len(retries) == int((deadline - fire).total_seconds() // 600) + 1
    assert final[1].action == "skip" and "gave up after the retry window" in final[1].reason
    assert deadline < final[0] <= deadline + timedelta(seconds=30)
    d = s.decide(at(2026, 11, 29, 12), 5, False)
    assert d.action == "idle" and d.slot == at(2026, 11, 30, 1)
    assert [d.slot for _, d in walk(s, at(2026, 11, 29, 12), at(2026, 11, 30, 12))] == [at(2026, 11, 30, 1)]


# -- never two campaigns at once -----------------------------------------------------------------
def test_running_campaign_skips_and_never_overlaps():
    s = Scheduler(BERLIN, rng=random.Random(12))
    decisions = walk(s, at(2026, 11, 28, 12), at(2026, 11, 29, 12), step=30, running=True)
    assert decisions and all(d.action == "skip" for _, d in decisions)
    assert "a campaign is already running" in decisions[0][1].reason
    assert "gave up after the retry window" in decisions[-1][1].reason


def test_starts_at_the_retry_after_the_running_campaign_ends():
    s = Scheduler(BERLIN, rng=random.Random(13))
    fire = fire_time(s, at(2026, 11, 28, 12))
    assert s.decide(fire, 5, True).action == "skip"
    assert s.decide(fire + timedelta(seconds=600), 5, True).action == "skip"
    assert s.decide(fire + timedelta(seconds=700), 5, False).action == "idle"  # ended at +700
    assert s.decide(fire + timedelta(seconds=1200), 5, False).action == "start"


def test_random_walk_never_starts_twice_or_while_running():
    for seed in range(20):
        rnd = random.Random(seed)
        state = None
        s = Scheduler(BERLIN, rng=random.Random(seed))
        started: set[datetime] = set()
        t = at(2026, 10, 1)
        while t < at(2026, 11, 15):
            running = rnd.random() < 0.3
            d = s.decide(t, rnd.randint(0, 3), running)
            if d.action == "start":
                assert not running and d.slot not in started
                started.add(d.slot)
                if rnd.random() < 0.5:
                    s.mark_started(d.slot)
            if rnd.random() < 0.02:  # restarts, some after long downtime
                state = json.loads(json.dumps(s.state()))
                s = Scheduler(BERLIN, state, rng=random.Random(rnd.random()))
                t += timedelta(hours=rnd.choice([0, 1, 30]))
            t += timedelta(seconds=rnd.choice([1, 60, 300, 900]))
        assert started


def test_no_start_again_without_mark_started_or_when_the_clock_steps_back():
    s = Scheduler(NO_DELAY, rng=random.Random(14))
    s.decide(at(2026, 11, 28, 12), 5, False)
    assert s.decide(at(2026, 11, 29, 1), 5, False).action == "start"
    assert s.decide(at(2026, 11, 29, 1, 0, 1), 5, False).action == "idle"
    assert s.decide(at(2026, 11, 28, 23), 5, False).action == "idle"  # NTP stepped back
    assert s.decide(at(2026, 11, 29, 1), 5, False).action == "idle"


# -- config and state ----------------------------------------------------------------------------
@pytest.mark.parametrize("field, bad", [
    ("cron", "bad"), ("cron", "0 25 * * *"), ("cron", ""), ("cron", "0 0 31 2 *"),
    ("cron", "0 2 * * * *"), ("timezone", "Mars/Olympus_Mons"), ("timezone", "../etc/passwd"),
    ("random_delay_seconds", -1), ("random_delay_seconds", float("nan")),
    ("retry_interval_seconds", 0), ("retry_interval_seconds", -5),
    ("retry_window_seconds", -1), ("retry_window_seconds", 300), ("min_agents", 0), ("min_agents", -2),
])
def test_validate_names_the_field(field, bad):
    cfg = ScheduleConfig(**{field: bad})
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        validate(cfg)
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        Scheduler(cfg)


def test_validate_accepts_defaults_and_aliases():
    validate(ScheduleConfig())
    validate(ScheduleConfig(cron="@daily", timezone="America/New_York", random_delay_seconds=0))


def test_state_round_trips_through_json():
    s = Scheduler(BERLIN, rng=random.Random(15))
    states = [s.state()]
    s.decide(at(2026, 11, 28, 12), 5, False)
    states.append(s.state())
    fire = fire_time(s, at(2026, 11, 28, 12))
    s.decide(fire, 0, False)
    states.append(s.state())
    for st in states:
        text = json.dumps(st)
        assert json.loads(text) == st
        assert Scheduler(BERLIN, json.loads(text)).state() == st
    again = restart(s)
    assert again.state() == s.state()
    retry = fire + timedelta(seconds=600)
    assert again.decide(retry, 5, False) == s.decide(retry, 5, False)


def test_changed_schedule_does_not_catch_up():
    s = Scheduler(BERLIN, rng=random.Random(16))
    walk(s, at(2026, 11, 28, 12), at(2026, 11, 29, 12))
    later = ScheduleConfig(cron="0 3 * * *", timezone="Europe/Berlin")
    s = restart(s, later)
    d = s.decide(at(2026, 12, 2, 12), 5, False)
    assert d.action == "idle" and d.slot == at(2026, 12, 3, 2)


def test_rejects_bad_state_and_naive_times():
    with pytest.raises(ValueError, match="^state"):
        Scheduler(BERLIN, {"version": 1, "cron": BERLIN.cron, "timezone": BERLIN.timezone,
                           "last_handled": "yesterday"})
    with pytest.raises(ValueError, match="^state"):
        Scheduler(BERLIN, {"version": 99})
    with pytest.raises(ValueError, match="timezone-aware"):
        Scheduler(BERLIN).decide(datetime(2026, 11, 29, 1), 5, False)
