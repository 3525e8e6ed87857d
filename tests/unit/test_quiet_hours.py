"""Quiet hours across daylight-saving changes: the deferred time is the window's first exit."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policy import in_quiet_hours, quiet_until

ZONES = ["Europe/London", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham",
         "Europe/Berlin", "Asia/Tokyo", "UTC"]
# Around the changes of 2026 in both hemispheres, so many examples straddle one.
instants = st.sampled_from([
    datetime(2026, 3, 8, tzinfo=timezone.utc), datetime(2026, 3, 29, tzinfo=timezone.utc),
    datetime(2026, 4, 5, tzinfo=timezone.utc), datetime(2026, 9, 27, tzinfo=timezone.utc),
    datetime(2026, 10, 4, tzinfo=timezone.utc), datetime(2026, 10, 25, tzinfo=timezone.utc),
    datetime(2026, 11, 1, tzinfo=timezone.utc),
]).flatmap(lambda day: st.integers(-2 * 86400, 2 * 86400).map(lambda s: day + timedelta(seconds=s)))
times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


def quiet(at: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    return in_quiet_hours(at.astimezone(zone).time(), start, end)


@settings(max_examples=400, deadline=None)
@given(now=instants, zone=st.sampled_from(ZONES).map(ZoneInfo), start=times, end=times)
def test_deferred_time_is_the_first_instant_outside_the_window(now, zone, start, end):
    until = quiet_until(now, zone, start, end)
    if until is None:
        assert not quiet(now, zone, start, end)
        return
    assert until > now
    assert not quiet(until, zone, start, end)  # outside the window, on the local wall clock
    assert quiet(until - timedelta(seconds=1), zone, start, end)  # and not a second later than needed
    # every instant before it is still quiet (sampled every 5 minutes)
    at = now
    while at < until:
        assert quiet(at, zone, start, end), at
        at += timedelta(minutes=5)
    # A day and a DST hour at most; two if a jump forward swallows the whole of a day's
    # open stretch (New York's spring-forward skips 02:00-03:00: a window 02:15-02:00
    # is open only 02:00-02:15, which that day does not have).
    assert until - now <= timedelta(hours=49)


def test_an_open_stretch_the_clock_skips_waits_a_day_more():
    zone = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 8, 1, 0, tzinfo=zone)  # quiet; 02:00-02:15 is open, but skipped this night
    until = quiet_until(now, zone, time(2, 15), time(2, 0))
    assert until == datetime(2026, 3, 9, 2, 0, tzinfo=zone)


def test_spring_forward_skips_past_the_end():
    # New York, 8 March 2026: 02:00 EST becomes 03:00 EDT; a window ending at 02:30 ends at 03:00.
    zone = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 8, 1, 45, tzinfo=zone)
    assert quiet_until(now, zone, time(1, 0), time(2, 30)) == datetime(2026, 3, 8, 7, 0, tzinfo=timezone.utc)


def test_fall_back_ends_at_the_first_pass_of_the_end():
    # London, 25 October 2026: 02:00 BST becomes 01:00 GMT; a window 00:00-01:30 ends at the first 01:30.
    zone = ZoneInfo("Europe/London")
    now = datetime(2026, 10, 25, 0, 10, tzinfo=timezone.utc)  # 01:10 BST
    assert quiet_until(now, zone, time(0, 0), time(1, 30)) == datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)


def test_an_overnight_window_ends_the_next_morning_local_time():
    zone = ZoneInfo("Europe/Paris")
    now = datetime(2026, 3, 28, 22, 0, tzinfo=timezone.utc)  # 23:00 CET; the clocks go forward that night
    assert quiet_until(now, zone, time(21, 0), time(8, 0)) == datetime(2026, 3, 29, 6, 0, tzinfo=timezone.utc)  # 08:00 CEST
