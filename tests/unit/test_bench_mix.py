"""bench/mix.py: the shipped journeys' samples, scaled up into copies that do not meet."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from bench import mix


def test_every_hour_of_the_day_has_a_zone_where_it_is_about_noon() -> None:
    for hour in range(24):
        now = dt.datetime(2026, 12, 1, hour, 30, tzinfo=dt.timezone.utc)
        local = now.astimezone(ZoneInfo(mix.noon_zone(now)))
        assert 10 <= local.hour <= 14, (hour, mix.noon_zone(now), local)


def test_each_copy_has_its_own_people_orders_and_referral_codes_and_keeps_the_samples_order() -> None:
    now = dt.datetime(2026, 12, 1, 16, tzinfo=dt.timezone.utc)
    # Given two copies of the samples
    first, second = mix.copies("run", 2, now)
    samples = mix.samples()
    assert len(first) == len(second) == len(samples)

    def people(copy: list[dict[str, object]]) -> set[object]:
        return ({e.get("userId") for e in copy} | {e.get("anonymousId") for e in copy}) - {None}

    # Then no person, message, order or referral code is in both
    assert not people(first) & people(second)
    assert not {e["messageId"] for e in first} & {e["messageId"] for e in second}
    codes = [{str(e.get("properties", {}).get("referral_code")) for e in copy} - {"None"} for copy in (first, second)]
    assert codes[0] and not codes[0] & codes[1]
    # and within a copy, the referral code a customer converts with is the one its referrer was given
    given = {e["traits"]["referral_code"] for e in first if "referral_code" in e.get("traits", {})}
    assert given & codes[0]
    # and the events keep the samples' order, stamped before now, in the zone where it is noon
    stamps = [dt.datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")) for e in first + second]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps) and stamps[-1] < now
    assert [e["type"] for e in first] == [e["type"] for e in samples]
    assert {e["traits"]["timezone"] for e in first if "traits" in e} == {mix.noon_zone(now)}
