"""Policy across journeys: consent, unsubscribe links, suppression, caps and quiet hours."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from channels.stub import StubChannel
from engine import deploy, ingest, profiles
from engine.api import create_app
from engine.delivery import Deliverer
from engine.policy import PolicyLayer, record_consent, subscribed, suppress
from engine.scheduler import Scheduler
from engine.settings import FrequencyCap
from engine.storage.models import Consent, Customer, Delivery, Enrollment, Event, Timer, TraceEntry
from engine.unit_of_work import UnitOfWork

JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"
NOON = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
NIGHT = datetime(2026, 6, 15, 22, 30, tzinfo=timezone.utc)


@pytest.fixture
def world(any_services):  # type: ignore[no-untyped-def]
    return make_world(any_services, "Europe/London")


def make_world(services, zone: str):  # type: ignore[no-untyped-def]
    """nps_survey deployed (quiet hours 21:00-08:00, defer), one customer, a stub email adapter."""
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(JOURNEYS / "nps_survey.yaml")], NOON)
        customer = Customer(external_id="ada", traits={"email": "Ada@Example.com", "first_name": "Ada"},
                            timezone=zone, first_seen_at=NOON, last_seen_at=NOON, updated_at=NOON)
        session.add(customer)
        session.flush()
        session.add(Enrollment(id="e-1", journey_id="nps_survey", version=1, customer_id=customer.id,
                               status="active", started_at=NOON, updated_at=NOON))
        customer_id = customer.id
    stub = StubChannel("email")
    services.adapters["email"] = stub
    return services, customer_id, stub


def deliverer(services, **settings) -> Deliverer:  # type: ignore[no-untyped-def]
    policy = PolicyLayer(services.settings.replace(**settings), services.sessions, services.deployed)
    return Deliverer(services.sessions, services.deployed, services.adapter, policy, unsubscribe_links=policy.unsubscribe_url)


def add_deliveries(services, customer_id: int, n: int = 1, *, kind: str = "marketing") -> list[int]:  # type: ignore[no-untyped-def]
    with services.sessions.begin() as session:
        rows = [
            Delivery(key=f"d-{kind}-{i}-{datetime.now().timestamp()}", enrollment_id="e-1", customer_id=customer_id,
                     journey_id="nps_survey", version=1, step="survey", channel="email", template="nps_survey",
                     kind=kind, topic="surveys", created_at=NOON, updated_at=NOON)
            for i in range(n)
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def test_an_unsubscribed_topic_is_held_with_the_reason_and_others_still_go(world):
    services, customer_id, stub = world
    with services.sessions.begin() as session:
        record_consent(session, customer_id, "email", "surveys", False, "preference centre", NOON)
        assert not subscribed(session, customer_id, "email", "surveys")
        assert subscribed(session, customer_id, "email", "news")
    [held] = add_deliveries(services, customer_id)
    outcome = deliverer(services).deliver(held, NOON)
    assert (outcome.status, outcome.error) == ("held", "unsubscribed from email topic surveys")
    with services.sessions.begin() as session:
        assert session.get(Delivery, held).error == "unsubscribed from email topic surveys"
        trace = session.execute(select(TraceEntry).where(TraceEntry.what == "delivery held")).scalar_one()
        assert trace.error == outcome.error
        record_consent(session, customer_id, "email", "*", False, "preference centre", NOON)
        record_consent(session, customer_id, "email", "surveys", True, "preference centre", NOON)
    [sent] = add_deliveries(services, customer_id)
    assert deliverer(services).deliver(sent, NOON).status == "sent"  # the topic's choice wins
    assert stub.sent and stub.sent[0].recipient.email == "Ada@Example.com"


def test_unsubscribe_link_one_click_and_a_tampered_token(world):
    services, customer_id, stub = world
    [first] = add_deliveries(services, customer_id)
    assert deliverer(services, public_url="https://journeys.test").deliver(first, NOON).status == "sent"
    url = stub.sent[0].metadata["unsubscribe_url"]
    assert url.startswith("https://journeys.test/u/")
    path = url.removeprefix("https://journeys.test")
    with TestClient(create_app(services)) as client:
        page = client.get(path)
        assert page.status_code == 200 and "<form method=\"post\"" in page.text and "surveys" in page.text
        payload, _, signature = path.removeprefix("/u/").partition(".")
        tampered = f"/u/{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
        assert client.get(tampered).status_code == 400
        assert client.post(tampered, content="List-Unsubscribe=One-Click").status_code == 400
        with services.sessions() as session:
            assert session.execute(select(Consent)).first() is None
        done = client.post(path, content="List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert done.status_code == 200 and "unsubscribed" in done.text
    with services.sessions() as session:
        assert not subscribed(session, customer_id, "email", "surveys")
    [second] = add_deliveries(services, customer_id)
    assert deliverer(services).deliver(second, NOON).status == "held"  # at once


def test_suppression_holds_marketing_and_transactional_alike(world):
    services, customer_id, stub = world
    with services.sessions.begin() as session:
        suppress(session, "email", "hard_bounce", NOON, address="ada@example.com ")
        with pytest.raises(ValueError, match="unknown suppression reason"):
            suppress(session, "email", "bored", NOON, customer_id=customer_id)
    marketing, transactional = add_deliveries(services, customer_id)[0], add_deliveries(services, customer_id, kind="transactional")[0]
    for delivery_id in (marketing, transactional):
        outcome = deliverer(services).deliver(delivery_id, NIGHT)
        assert (outcome.status, outcome.error) == ("held", "suppressed: hard bounce on email")
    assert stub.sent == []


def test_transactional_skips_caps_and_quiet_hours(world):
    services, customer_id, stub = world
    ids = add_deliveries(services, customer_id, 3, kind="transactional")
    d = deliverer(services, frequency_caps={"email": FrequencyCap(1, timedelta(days=1))})
    assert [d.deliver(i, NIGHT).status for i in ids] == ["sent"] * 3
    assert "unsubscribe_url" not in stub.sent[0].metadata


def test_quiet_hours_defer_to_the_window_end_and_the_scheduler_sends_then(world):
    services, customer_id, stub = world
    [delivery_id] = add_deliveries(services, customer_id)
    outcome = deliverer(services).deliver(delivery_id, NIGHT)  # 23:30 in London (BST)
    assert outcome.status == "deferred" and "quiet hours 21:00-08:00 Europe/London" in (outcome.error or "")
    end = datetime(2026, 6, 16, 7, 0, tzinfo=timezone.utc)  # 08:00 BST
    with services.sessions() as session:
        row = session.get(Delivery, delivery_id)
        assert (row.status, row.not_before, row.attempts) == ("pending", end, 0)
    assert deliverer(services).deliver(delivery_id, end - timedelta(minutes=1)).status == "pending"  # not yet
    assert Scheduler(services).sweep(end - timedelta(seconds=1)) == 0
    assert Scheduler(services).sweep(end) == 1
    assert deliverer(services).deliver(delivery_id, end).status == "sent"


def test_quiet_hours_drop_holds_with_the_reason(world, monkeypatch):
    services, customer_id, stub = world
    journey = services.deployed.get("nps_survey", 1)
    quiet = journey.policy.quiet_hours
    dropping = replace(journey, policy=replace(journey.policy, quiet_hours=replace(quiet, action="drop")))
    monkeypatch.setattr(services.deployed, "get", lambda *_args, **_kwargs: dropping)
    [delivery_id] = add_deliveries(services, customer_id)
    outcome = deliverer(services).deliver(delivery_id, NIGHT)
    assert (outcome.status, outcome.error) == ("held", "quiet hours 21:00-08:00 Europe/London: dropped")


def test_fifty_concurrent_sends_to_one_customer_with_a_cap_of_three_a_day(pg_services):
    services, customer_id, stub = make_world(pg_services, "UTC")
    ids = add_deliveries(services, customer_id, 50)
    d = deliverer(services, frequency_caps={"email": FrequencyCap(3, timedelta(days=1))})
    start = threading.Barrier(50)
    outcomes: dict[int, str] = {}

    def send(delivery_id: int) -> None:
        start.wait()
        outcomes[delivery_id] = d.deliver(delivery_id, NOON).status

    threads = [threading.Thread(target=send, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()).count("sent") == 3 and len(stub.sent) == 3
    with services.sessions() as session:
        rows = session.execute(select(Delivery.status, Delivery.error).where(Delivery.id.in_(ids))).all()
    held = [error for status, error in rows if status == "held"]
    assert len(held) == 47
    assert all(e.startswith("frequency cap: 3 email messages in the last 1d (cap 3)") for e in held)


# -- a transactional step in a marketing journey: order_followup, end to end ------------------
# Events and timers are applied as the workers apply them, on a virtual clock; the
# deliveries they make go through the Deliverer and the PolicyLayer at the times given.

PARIS_NIGHT = datetime(2026, 6, 15, 21, 30, tzinfo=timezone.utc)  # 23:30 in Paris (CEST)


@pytest.fixture
def followup(any_services):  # type: ignore[no-untyped-def]
    """order_followup deployed (marketing, quiet hours 21:00-08:00; its thank-you is
    transactional), Ada in Paris, a stub email adapter."""
    with any_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(JOURNEYS / "order_followup.yaml")], NOON)
    stub = StubChannel("email")
    any_services.adapters["email"] = stub
    happen(any_services, NOON, "identify", traits={"email": "ada@example.com", "first_name": "Ada", "timezone": "Europe/Paris"})
    return any_services, stub


def happen(services, at: datetime, type_: str, **body) -> list[int]:  # type: ignore[no-untyped-def]
    """Ada's event, stored and applied at ``at`` as the events worker does; the deliveries it made."""
    rows, outcome = ingest.prepare({"userId": "ada", "timestamp": at.isoformat(), **body}, source="test", received_at=at, type_=type_)
    assert not outcome.rejected
    with services.sessions.begin() as session:
        [event_id] = ingest.store(session, rows)
        event = session.get(Event, event_id)
        unit = UnitOfWork(session)
        customer, before = profiles.apply_event(unit, event, at)
        services.orchestrator.on_event(unit, event, customer, at, before)
        return [d for d, _ in services.orchestrator.finish(unit).deliveries]


def order(services, at: datetime, order_id: str) -> int:  # type: ignore[no-untyped-def]
    """Ada orders, then the order is delivered; the thank-you's delivery."""
    [thanks] = happen(services, at, "track", event="order_completed",
                      properties={"order_id": order_id, "total": 89.9, "currency": "EUR", "item_count": 2})
    assert happen(services, at, "track", event="order_delivered", properties={"order_id": order_id}) == []
    return thanks


def timers_fire(services, at: datetime) -> list[int]:  # type: ignore[no-untyped-def]
    """Fire every timer due by ``at``, as the timers worker does; the deliveries they made."""
    with services.sessions() as session:
        keys = session.execute(select(Timer.key).where(Timer.fired_at.is_(None), Timer.due_at <= at).order_by(Timer.due_at)).scalars().all()
    made: list[int] = []
    for key in keys:
        with services.sessions.begin() as session:
            unit = UnitOfWork(session)
            services.orchestrator.on_timer(unit, key, at)
            made += [d for d, _ in services.orchestrator.finish(unit).deliveries]
    return made


def kinds(services, ids: list[int]) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with services.sessions() as session:
        return [(row.step, row.kind) for row in (session.get(Delivery, i) for i in ids)]


def test_the_thank_you_goes_out_in_quiet_hours_and_the_review_request_is_deferred(followup):
    services, stub = followup
    thanks = order(services, PARIS_NIGHT, "o-1")
    [review] = timers_fire(services, PARIS_NIGHT + timedelta(days=4))  # 10:00 in Paris, three days after delivery
    assert kinds(services, [thanks, review]) == [("thank_you", "transactional"), ("review_request", "marketing")]

    assert deliverer(services).deliver(thanks, PARIS_NIGHT).status == "sent"
    late = PARIS_NIGHT + timedelta(days=4)  # the review request reaches a worker at 23:30 in Paris
    outcome = deliverer(services).deliver(review, late)
    assert outcome.status == "deferred"
    assert outcome.error == "quiet hours 21:00-08:00 Europe/Paris: deferred to 2026-06-20T06:00:00+00:00"
    assert [m.metadata["step_id"] for m in stub.sent] == ["thank_you"]
    assert deliverer(services).deliver(review, datetime(2026, 6, 20, 6, 0, tzinfo=timezone.utc)).status == "sent"


def test_the_thank_you_goes_out_past_the_cap_and_the_review_request_is_held(followup):
    services, stub = followup
    d = deliverer(services, frequency_caps={"email": FrequencyCap(1, timedelta(days=1))})
    first, second = order(services, NOON, "o-1"), order(services, NOON, "o-2")
    assert [d.deliver(i, NOON).status for i in (first, second)] == ["sent", "sent"]  # two in a day, cap 1
    morning = datetime(2026, 6, 19, 8, 0, tzinfo=timezone.utc)  # 10:00 in Paris
    reviews = timers_fire(services, morning)
    assert [d.deliver(i, morning).error for i in reviews] == [None, "frequency cap: 1 email messages in the last 1d (cap 1)"]
    third = order(services, morning + timedelta(minutes=30), "o-3")
    assert d.deliver(third, morning + timedelta(minutes=30)).status == "sent"  # the cap is reached: still sent
    assert [m.metadata["step_id"] for m in stub.sent] == ["thank_you", "thank_you", "review_request", "thank_you"]


def test_the_thank_you_is_still_suppressed(followup):
    services, stub = followup
    with services.sessions.begin() as session:
        suppress(session, "email", "complaint", NOON, address="ada@example.com")
    thanks = order(services, PARIS_NIGHT, "o-1")
    outcome = deliverer(services).deliver(thanks, PARIS_NIGHT)
    assert (outcome.status, outcome.error) == ("held", "suppressed: complaint on email")
    assert stub.sent == []


def test_choices_recorded_at_the_same_moment_make_one_row(pg_services):
    # The unsubscribe link and the admin API may record a first choice for one topic at once.
    services, customer_id, _ = make_world(pg_services, "UTC")
    start = threading.Barrier(10)
    failures: list[BaseException] = []

    def choose(i: int) -> None:
        start.wait()
        try:
            with services.sessions.begin() as session:
                record_consent(session, customer_id, "email", "surveys", i % 2 == 0, f"source {i}", NOON)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=choose, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with services.sessions() as session:
        assert len(session.execute(select(Consent)).all()) == 1
