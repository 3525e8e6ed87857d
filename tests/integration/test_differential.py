"""The twin and the real workers agree: random event streams over the shipped journeys.

Hypothesis draws a stream of Segment events for a few customers (identifies with or
without an email, a phone, a time zone, a tier, push tokens; anonymous visitors and
merges; checkouts and their orders, deliveries, refunds, product views, NPS answers,
referrals, coupons...) spread over five days at quarter-hour steps, so waits, timeouts
and quiet hours come into play. The
stream runs through:

1. the twin (:class:`engine.twin.Twin`): SQLite in memory, the StubBroker drained in
   this thread;
2. the real path: PostgreSQL (a schema of its own) and Redis (a key prefix of its own),
   a real dramatiq Worker thread consuming the queues, the events posted to the FastAPI
   app. The same driver loop moves its virtual clock (:func:`engine.twin.fast_forward`),
   settling by waiting for the worker (:func:`tests.integration.settle.settle`).

Both use recording stub channels and the same settings. Then, per customer, the two
must agree on everything the twin's queries read from the rows (:func:`engine.twin.effects`:
sends with their rendered content, holds, deferrals and failures with their reasons,
stage changes, points, enrollments entered and ended with status and reason), on the
profile (stage, points, referral codes, traits) and on what each stub channel was
given. Only what must differ is normalised: database ids (enrollment ids and the
idempotency keys made from them; customer row ids in unsubscribe links, which are checked
and told by name), and the order of effects of different journeys or
channels at one instant, which run in parallel in production. The time an event was
received is compared on its own (the last test): both read the services' clock. When
they disagree, both sides are printed per customer.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import difflib
import pprint
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from engine import deploy
from engine.api import create_app
from engine.services import Services
from engine.settings import Settings
from engine.twin import (
    DEFAULT_HORIZON, Twin, VirtualClock, customer_ids, customers, effects, fast_forward, profile, stub_channels,
)
from tests.conftest import REDIS_URL, create_key, make_services, pg_schema, redis_prefix
from tests.integration.settle import settle

pytestmark = pytest.mark.integration

JOURNEYS = sorted((Path(__file__).resolve().parents[2] / "journeys").glob("*.yaml"))
#: A Monday, midnight UTC: the streams start here, as the shipped samples do.
START = dt.datetime(2024, 5, 6, tzinfo=dt.timezone.utc)
#: What both sides run with: the real path needs a secret and a public URL to sign
#: unsubscribe links; the twin applies no rate limits (they pace wall time), so neither does this.
SETTINGS = {"secret": "d" * 32, "public_url": "https://journeys.shop.example", "rate_limits": {}}

CUSTOMERS = ("ada", "grace", "linus")
TIMEZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Helsinki")
ORDERS = ("o-1", "o-2")
#: Over how many days the events are spread.
DAYS = 5
TIMESTAMPS = st.integers(0, DAYS * 24 * 4).map(lambda quarters: START + dt.timedelta(minutes=15 * quarters))


@st.composite
def identify(draw: st.DrawFn, user: str) -> dict[str, Any]:
    """An identify with some of the traits the shipped journeys read."""
    traits: dict[str, Any] = {"first_name": user.capitalize()}
    optional = {
        "email": st.just(f"{user}@example.com"),
        "phone": st.just("+447700900123"),
        "timezone": st.sampled_from(TIMEZONES),
        "push_enabled": st.booleans(),
        "push_token": st.just(f"fcm-{user}-1"),
        "tier": st.sampled_from(("silver", "gold")),
        "referral_code": st.just(f"{user.upper()}-7F3K"),
    }
    for name, values in optional.items():
        if draw(st.integers(0, 3) if name == "email" else st.booleans()):  # most have an email
            traits[name] = draw(values)
    return {"type": "identify", "userId": user, "traits": traits}


ORDER = st.sampled_from(ORDERS)
TRACKS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "signed_up": st.fixed_dictionaries({"plan": st.sampled_from(("free", "pro")), "source": st.just("web")}),
    "checkout_started": st.fixed_dictionaries({
        "cart_value": st.sampled_from((0, 89, 120.5, 320)), "order_id": ORDER, "currency": st.just("EUR"),
        "item_count": st.just(1)}),
    "order_completed": st.fixed_dictionaries({
        "order_id": ORDER, "total": st.sampled_from((15.5, 89.9, 640.0, 1200.0)), "currency": st.just("EUR"),
        "item_count": st.just(1)}),
    "order_delivered": st.fixed_dictionaries({"order_id": ORDER}),
    "order_refunded": st.fixed_dictionaries({"order_id": ORDER}),
    "review_submitted": st.fixed_dictionaries({"order_id": ORDER}),
    "product_viewed": st.fixed_dictionaries({"product_id": st.just("p-42"), "category": st.just("shoes")}),
    "nps_submitted": st.fixed_dictionaries({"score": st.integers(0, 10)}),
    "referral_converted": st.fixed_dictionaries({
        "referral_code": st.sampled_from(("ADA-7F3K", "GRACE-7F3K", "NOBODY-1")), "order_id": ORDER}),
    "coupon_redeemed": st.fixed_dictionaries({"code": st.sampled_from(("COMEBACK15", "OTHER"))}),
    "account_deleted": st.just({}),
}


@st.composite
def event(draw: st.DrawFn) -> dict[str, Any]:
    """One Segment event of one of the customers, at a quarter hour of the days."""
    user = draw(st.sampled_from(CUSTOMERS))
    name = draw(st.sampled_from(("identify", *TRACKS)))
    data = draw(identify(user)) if name == "identify" else {
        "type": "track", "userId": user, "event": name, "properties": draw(TRACKS[name])}
    # Now and then the visitor is anonymous (a track), or an identify names the anonymous
    # id it was seen with (a merge of that history into the customer).
    seen = draw(st.sampled_from(("user", "user", "anonymous", "both")))
    if seen != "user":
        data["anonymousId"] = f"anon-{user}"
    if seen == "anonymous" and name != "identify":
        del data["userId"]
    return {**data, "timestamp": draw(TIMESTAMPS).isoformat()}


@st.composite
def checkout_then_order(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A checkout and, up to a day later (around the reminders, the quiet hours), its order."""
    checkout = draw(event().filter(lambda e: e.get("event") != "identify")) | {"type": "track", "event": "checkout_started"}
    checkout["properties"] = draw(TRACKS["checkout_started"])
    later = dt.datetime.fromisoformat(checkout["timestamp"]) + dt.timedelta(minutes=15 * draw(st.integers(0, 96)))
    order = {**checkout, "event": "order_completed", "timestamp": later.isoformat(),
             "properties": draw(TRACKS["order_completed"]) | {"order_id": checkout["properties"]["order_id"]}}
    return [checkout, order]


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A time-ordered stream, most customers identified first, with distinct messageIds."""
    first = [draw(identify(user)) | {"timestamp": START.isoformat()}
             for user in CUSTOMERS if draw(st.integers(0, 3))]  # mostly identified up front
    parts = draw(st.lists(st.one_of(event().map(lambda e: [e]), checkout_then_order()), min_size=3, max_size=9))
    stream = sorted(first + [e for part in parts for e in part], key=lambda e: e["timestamp"])
    return [e | {"messageId": f"m-{i}"} for i, e in enumerate(stream, 1)]


# -- the two sides ----------------------------------------------------------------------------


def run_twin(stream: list[dict[str, Any]], *, received: bool = False) -> dict[str, Any]:
    """The stream through the twin; what each customer saw (``received``: with when each event was received)."""
    with Twin(JOURNEYS, start=START, settings=Settings(**SETTINGS)) as twin:  # type: ignore[arg-type]
        twin.run(stream)
        return outcomes(twin.services, received=received)


@contextmanager
def real_services() -> Iterator[tuple[Services, VirtualClock]]:
    """Services on a fresh PostgreSQL schema and Redis prefix, on a virtual clock, with stub channels."""
    with pg_schema() as url, redis_prefix() as namespace:
        services = make_services(url, redis_url=REDIS_URL, namespace=namespace, **SETTINGS)
        clock = VirtualClock(START)
        services.clock = clock
        services.adapters.update(stub_channels())
        try:
            yield services, clock
        finally:
            services.close()


def run_real(stream: list[dict[str, Any]], *, received: bool = False) -> dict[str, Any]:
    """The stream through the API and a real worker on PostgreSQL and Redis; what each customer saw (as run_twin)."""
    with real_services() as (services, clock):
        with services.sessions.begin() as session:
            deploy.deploy(session, [deploy.snapshot(path) for path in JOURNEYS], clock.current)
        auth = {"Authorization": "Basic " + base64.b64encode(f"{create_key(services)}:".encode()).decode()}
        worker = dramatiq.Worker(services.broker, worker_timeout=50,
                                worker_threads=services.settings.worker_threads)  # as `journey worker` runs
        worker.start()
        try:
            wait = lambda: settle(services)  # noqa: E731
            with TestClient(create_app(services)) as client:
                for item in stream:  # as Twin.send: what is due before it goes first, at its instant after it
                    at = dt.datetime.fromisoformat(item["timestamp"])
                    fast_forward(services, clock, at, wait, inclusive=False)
                    clock.current = max(clock.current, at)
                    response = client.post(f"/v1/{item['type']}", json=item, headers=auth)
                    assert response.status_code == 200, response.text
                    wait()
            fast_forward(services, clock, clock.current + DEFAULT_HORIZON, wait)  # as Twin.finish()
        finally:
            worker.stop()
        return outcomes(services, received=received)


# -- what is compared -------------------------------------------------------------------------

#: Enrollment ids (uuids) and what is derived from them (idempotency keys) differ between
#: two databases; so do customer row ids, which unsubscribe links sign.
IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNSUBSCRIBE = re.compile(r"/u/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


def outcomes(services: Services, *, received: bool = False) -> dict[str, Any]:
    """Per customer: the effects as the twin reads them from the rows, the profile, what each stub channel got.

    ``received``: keep when each event was received (the last test).
    """
    found: dict[str, Any] = {}
    with services.sessions() as session:
        # A row id, to the name of the live customer it is (or was merged into).
        names = {cid: name for name in customers(session) for cid in customer_ids(session, name)}

        def link(match: re.Match[str]) -> str:
            # A link names the customer by row id: checked (signed here) and told by name.
            read = services.policy.read_token(match.group(1), session)
            return f"/u/{names[read[0]]}/{read[1]}/{read[2]}" if read else "/u/<not signed here>"

        def scrub(value: Any) -> Any:
            if isinstance(value, str):
                return IDS.sub("<id>", UNSUBSCRIBE.sub(link, value))
            if isinstance(value, Mapping):
                return {k: scrub(v) for k, v in value.items() if k not in ("key", "enrollment")}
            if isinstance(value, (list, tuple)):
                return [scrub(v) for v in value]
            if isinstance(value, dt.datetime):
                return value.isoformat()
            return value

        for name in customers(session):
            happened = [scrub(e.to_dict()) for e in effects(session, name)]
            person = profile(session, name)
            found[name] = {
                # The API stamps an event's received_at with the wall clock (engine/api/app.py),
                # the twin with the virtual one: events are compared apart, without it.
                "events": [{k: v for k, v in e.items() if received or k != "at"}
                           for e in happened if e["effect"] == "event"],
                # By journey, then by channel: the enrollments one event starts are rows with
                # no order among them (uuids), and the sends of one instant go out in parallel
                # on their channels' queues; so they interleave at will, in order within each.
                "effects": _by_journey(e for e in happened if e["effect"] != "event"),
                "profile": scrub(dataclasses.asdict(person)) if person else None,
            }
        for channel, stub in sorted(services.adapters.items()):
            for message in getattr(stub, "attempts", ()):
                who = message.recipient.customer_id  # a user id, or an anonymous customer's anonymous id
                found.setdefault(who, {}).setdefault("channels", []).append(scrub({
                    "channel": channel, "recipient": dataclasses.asdict(message.recipient) | {"customer_id": who},
                    "content": message.content, "metadata": message.metadata}))
    return found


def _by_journey(happened: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for effect in happened:
        journey = grouped.setdefault(effect["journey"] or "(profile)", {})
        journey.setdefault(effect.get("channel") or "(steps)", []).append(effect)
    return grouped


def report(twin: dict[str, Any], real: dict[str, Any], stream: list[dict[str, Any]]) -> str:
    """Both sides, customer by customer, with a diff where they differ."""
    lines = ["the twin and the real workers disagree; the stream:", *map(str, stream)]
    for who in sorted(set(twin) | set(real)):
        left, right = pprint.pformat(twin.get(who), width=120), pprint.pformat(real.get(who), width=120)
        if left == right:
            continue
        lines += [f"== {who}: twin", left, f"== {who}: real", right, f"== {who}: diff"]
        lines += difflib.unified_diff(left.splitlines(), right.splitlines(), "twin", "real", lineterm="")
    return "\n".join(lines)


# No shrinking: each example runs real workers for seconds; the report prints the stream.
@settings(max_examples=10, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
          report_multiple_bugs=False, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=streams())
def test_twin_and_real_workers_agree(stream: list[dict[str, Any]]):
    twin, real = run_twin(stream), run_real(stream)
    assert twin == real, report(twin, real, stream)


def test_an_event_is_received_at_the_same_virtual_instant():
    # The API stamps received_at with the services' clock, as the twin does.
    stream = [{"type": "identify", "userId": "ada", "traits": {"first_name": "Ada"},
               "timestamp": START.isoformat(), "messageId": "m-1"}]
    twin, real = run_twin(stream, received=True), run_real(stream, received=True)
    assert twin == real, report(twin, real, stream)
