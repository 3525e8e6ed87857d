"""Events and timers of one customer: one lock order, and the event first when it is earlier.

The race test runs on the real PostgreSQL, where row locks (and deadlocks) exist; the
ordering rule's tests run on the twin and on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from engine import deploy, ingest
from engine.scheduler import Scheduler
from engine.services import Services
from engine.storage.models import Customer, Delivery, Enrollment, Event, Timer
from engine.workers.actors import MAX_EVENT_ATTEMPTS, apply_events, fire_timers_together

START = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
WAIT = timedelta(hours=1)

CART = """\
id: cart_race
name: Cart race
stage: consideration
trigger:
  event: checkout_started
entry: {reentry: always}
goal:
  event: order_completed
steps:
  - id: wait_1h
    wait: 1h
  - id: remember
    update:
      traits: {reminded: true}
  - id: reminder
    send: {channel: log, text: "your cart is waiting, {{ customer.id }}"}
"""


@pytest.fixture
def cart(tmp_path: Path) -> Callable[[Services], Services]:
    """Deploy the cart journey (a 1h wait, then a trait written and a reminder) on the given services."""
    path = tmp_path / "cart_race.yaml"
    path.write_text(CART, encoding="utf-8")

    def on(services: Services) -> Services:
        with services.sessions.begin() as session:
            deploy.deploy(session, [deploy.snapshot(path)], START)
        return services

    return on


def store(services: Services, at: datetime, user_id: str, type_: str, **body: Any) -> int:
    """Store an event as the API does (stamped and received at ``at``), without applying it."""
    rows, outcome = ingest.prepare({"userId": user_id, "timestamp": at.isoformat(), **body},
                                   source="test", received_at=at, type_=type_)
    assert not outcome.rejected
    with services.sessions.begin() as session:
        [event_id] = ingest.store(session, rows)
    return event_id


def at(services: Services, moment: datetime) -> None:
    """Set the workers' clock."""
    services.clock = lambda: moment


def checkouts(services: Services, users: list[str], start: datetime) -> list[str]:
    """The users start a checkout at ``start`` (applied); the keys of their 1h timers."""
    at(services, start)
    ids = [store(services, start, user, "track", event="checkout_started") for user in users]
    assert apply_events(services, ids) == []
    with services.sessions() as session:
        return list(
            session.execute(
                select(Timer.key)
                .join(Enrollment, Enrollment.id == Timer.enrollment_id)
                .join(Customer, Customer.id == Enrollment.customer_id)
                .where(Customer.external_id.in_(users), Timer.fired_at.is_(None))
            ).scalars()
        )


def reminded(services: Services, users: list[str]) -> set[str]:
    """The users a reminder was made for."""
    with services.sessions() as session:
        return set(
            session.execute(
                select(Customer.external_id)
                .join(Delivery, Delivery.customer_id == Customer.id)
                .where(Customer.external_id.in_(users), Delivery.step == "reminder")
            ).scalars()
        )


def statuses(services: Services, users: list[str]) -> dict[str, str]:
    with services.sessions() as session:
        return dict(
            session.execute(
                select(Customer.external_id, Enrollment.status)
                .join(Enrollment, Enrollment.customer_id == Customer.id)
                .where(Customer.external_id.in_(users))
            ).all()
        )


# -- the race, on PostgreSQL ------------------------------------------------------------------

ROUNDS = 30
CUSTOMERS = 6  # per round: half order a second before the reminder, half update their profile


def test_events_and_timers_of_the_same_customers_at_the_same_instant_neither_deadlock_nor_remind_buyers(
    pg_services: Services, cart: Callable[[Services], Services], caplog: pytest.LogCaptureFixture
) -> None:
    services = cart(pg_services)
    caplog.set_level(logging.WARNING, logger="engine.workers.actors")
    outcomes = []
    for round_ in range(ROUNDS):
        # Given customers waiting for their reminder, due at ``due``
        start = START + timedelta(days=round_)
        due = start + WAIT
        users = [f"r{round_}-{i}" for i in range(CUSTOMERS)]
        buyers, browsers = users[::2], users[1::2]
        keys = checkouts(services, users, start)
        # and, stored a second before it and not applied yet, an order from each buyer and a
        # profile update from each browser (their events lock customers and enrollments)
        events = [store(services, due - timedelta(seconds=1), user, "track", event="order_completed") for user in buyers]
        events += [store(services, due - timedelta(seconds=1), user, "identify", traits={"plan": "pro"}) for user in browsers]
        # When the event batch and the timer batch run at the same instant
        at(services, due)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(work: Callable[[], object]) -> None:
            try:
                barrier.wait()  # noqa: B023 - the threads are joined in this iteration
                work()
            except BaseException as exc:  # noqa: BLE001 - judged below
                errors.append(exc)  # noqa: B023

        threads = [
            threading.Thread(target=run, args=(lambda: apply_events(services, events),)),  # noqa: B023
            threading.Thread(target=run, args=(lambda: fire_timers_together(services, keys),)),  # noqa: B023
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # and the timers held back are fired again, as the scheduler's next tick does
        fire_timers_together(services, keys)
        with services.sessions() as session:
            traits = dict(session.execute(select(Customer.external_id, Customer.traits).where(Customer.external_id.in_(browsers))).all())
        outcomes.append((
            errors, statuses(services, users), reminded(services, users),
            {user: (t.get("plan"), t.get("reminded")) for user, t in traits.items()},
        ))
    # Then no round deadlocked (no batch fell back to one at a time), every buyer converted
    # without a reminder, and every browser got the reminder with both profile writes kept
    expected = []
    for round_ in range(ROUNDS):
        users = [f"r{round_}-{i}" for i in range(CUSTOMERS)]
        buyers, browsers = users[::2], users[1::2]
        expected.append((
            [], {**{u: "converted" for u in buyers}, **{u: "completed" for u in browsers}}, set(browsers),
            {user: ("pro", True) for user in browsers},
        ))
    fallbacks = [r.getMessage() for r in caplog.records if "one by one" in r.getMessage()]
    assert (fallbacks, outcomes) == ([], expected)


# -- the ordering rule: an earlier event still in the queue counts first ----------------------


def test_a_timer_waits_for_an_earlier_order_still_in_the_queue(any_services: Services, cart) -> None:  # type: ignore[no-untyped-def]
    # Given Ada waiting for her reminder, due at 11:00, and her order of 10:59:59 stored
    # but its queue message behind the timer's
    services = cart(any_services)
    [key] = checkouts(services, ["ada"], START)
    order = store(services, START + WAIT - timedelta(seconds=1), "ada", "track", event="order_completed")
    # When the timer fires at 11:00, then the scheduler's next tick comes, then the order is applied
    at(services, START + WAIT)
    fire_timers_together(services, [key])
    with services.sessions() as session:
        timer = session.get(Timer, key)
        held = (timer.fired_at, timer.enqueued_at)
    reclaimed = Scheduler(services).fire_due(START + WAIT + timedelta(seconds=1))
    assert apply_events(services, [order]) == []
    fire_timers_together(services, [key])
    # Then the timer was held back and enqueued again, and the order converted her: no reminder
    assert (held, reclaimed, statuses(services, ["ada"]), reminded(services, ["ada"])) == (
        (None, None), 1, {"ada": "converted"}, set()
    )


def _stamped_after_the_due_time(services: Services, due: datetime) -> None:
    store(services, due + timedelta(seconds=1), "ada", "track", event="order_completed")


def _given_up_on(services: Services, due: datetime) -> None:
    event_id = store(services, due - timedelta(seconds=1), "ada", "track", event="order_completed")
    with services.sessions.begin() as session:
        session.execute(update(Event).where(Event.id == event_id).values(attempts=MAX_EVENT_ATTEMPTS, error="broken"))


def _not_awaited(services: Services, due: datetime) -> None:
    store(services, due - timedelta(seconds=1), "ada", "track", event="page_viewed")


def _of_someone_else(services: Services, due: datetime) -> None:
    store(services, due - timedelta(seconds=1), "bob", "track", event="order_completed")


@pytest.mark.parametrize("pending", [_stamped_after_the_due_time, _given_up_on, _not_awaited, _of_someone_else])
def test_a_timer_does_not_wait_for_events_that_do_not_count_first(any_services: Services, cart, pending) -> None:  # type: ignore[no-untyped-def]
    # Given Ada waiting for her reminder, and a stored event that is not applied yet
    # but does not come before the timer
    services = cart(any_services)
    [key] = checkouts(services, ["ada"], START)
    pending(services, START + WAIT)
    # When the timer fires
    at(services, START + WAIT)
    fire_timers_together(services, [key])
    # Then the reminder is made at once
    assert reminded(services, ["ada"]) == {"ada"}
