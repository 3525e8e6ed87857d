"""The delivery pipeline: batches, retries with backoff, rate limits, bounces, deferred sends of ended enrollments."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from channels.base import Result
from channels.stub import StubChannel
from engine.delivery import CLAIM_CHUNK, MAX_ATTEMPTS, Deliverer, backoff
from engine.policy import PolicyLayer, record_bounce
from engine.ratelimit import InProcessRateLimiter
from engine.settings import RateLimit
from engine.storage.models import Delivery, Enrollment, Suppression, TraceEntry
from tests.conftest import drain
from tests.unit.test_policy import NOON, add_deliveries, make_world


class Clock:
    """A virtual clock: the limiter reads it, the deliverer's sleep advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class ClockedLimiter(InProcessRateLimiter):
    def __init__(self, limits, clock: Clock) -> None:  # type: ignore[no-untyped-def]
        super().__init__(limits)
        self.clock = clock

    def acquire(self, channel: str, now: float | None = None) -> float:
        return super().acquire(channel, self.clock.now)


def make_deliverer(services, **options) -> Deliverer:  # type: ignore[no-untyped-def]
    policy = PolicyLayer(services.settings, services.sessions, services.deployed)
    return Deliverer(services.sessions, services.deployed, services.adapter, policy, **options)


def rows(services, ids):  # type: ignore[no-untyped-def]
    with services.sessions() as session:
        return {d.id: d for d in session.execute(select(Delivery).where(Delivery.id.in_(ids))).scalars()}


@pytest.fixture
def world(any_services):  # type: ignore[no-untyped-def]
    return make_world(any_services, "UTC")


def test_a_batch_is_claimed_decided_and_recorded_together(world):
    services, customer_id, stub = world
    ids = add_deliveries(services, customer_id, 2 * CLAIM_CHUNK + 3)
    stub.fail("permanent", "mailbox unavailable")  # the first send only
    outcomes = make_deliverer(services).deliver_many(ids, NOON)
    assert [outcomes[i].status for i in ids] == ["failed"] + ["sent"] * (len(ids) - 1)
    assert len(stub.sent) == len(ids) - 1
    again = make_deliverer(services).deliver_many(ids, NOON)  # a message redelivered: nothing is sent twice
    assert {o.status for o in again.values()} == {"sent", "failed"} and len(stub.sent) == len(ids) - 1
    assert {(d.attempts, d.status) for d in rows(services, ids[1:]).values()} == {(1, "sent")}


def test_a_retryable_failure_backs_off_then_goes_dead(world):
    services, customer_id, stub = world
    [delivery_id] = add_deliveries(services, customer_id)
    stub.fail("retryable", "421 try later", times=None)
    deliverer = make_deliverer(services)
    delays = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        outcome = deliverer.deliver(delivery_id, NOON + timedelta(minutes=attempt))
        delays.append(outcome.retry_in)
    assert delays == [backoff(1), backoff(2), backoff(3), backoff(4), None] == [1, 2, 4, 8, None]
    row = rows(services, [delivery_id])[delivery_id]
    assert (row.status, row.attempts, row.error) == ("dead", MAX_ATTEMPTS, "421 try later")


def noon_now() -> str:
    """A time zone in which it is around noon now: the worker judges quiet hours at the real time."""
    offset = 12 - datetime.now(timezone.utc).hour  # -11 .. +12
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"  # Etc/ zones count the other way


def test_a_retried_delivery_is_sent_by_the_worker(any_services):
    # Given a channel that fails once, retryably
    services, customer_id, stub = make_world(any_services, noon_now())
    stub.fail("retryable", "421 try later")
    [delivery_id] = add_deliveries(services, customer_id)
    # When the worker takes its message
    services.broker.enqueue(services.actors.deliver.message([delivery_id]).copy(queue_name="deliveries.email"))
    drain(services)
    # Then the retry, enqueued with a delay of backoff(1), sends it
    row = rows(services, [delivery_id])[delivery_id]
    assert (row.status, row.attempts) == ("sent", 2)
    with services.sessions() as session:
        whats = session.execute(select(TraceEntry.what).order_by(TraceEntry.id)).scalars().all()
    assert whats == ["delivery retrying", "delivery sent"]


def test_the_rate_limit_spaces_sends_and_a_long_wait_gives_the_attempt_back(world):
    services, customer_id, stub = world
    clock = Clock()
    limiter = ClockedLimiter({"email": RateLimit(2.0, 2.0)}, clock)
    deliverer = make_deliverer(services, limiter=limiter, sleep=clock.sleep)
    ids = add_deliveries(services, customer_id, 6)
    outcomes = deliverer.deliver_many(ids, NOON)
    # a burst of 2, then one each half second
    assert [outcomes[i].status for i in ids] == ["sent"] * 6
    assert clock.slept == [0.5] * 4
    # A limit too slow to wait for inline: the delivery is pending again, to retry after the wait
    slow = make_deliverer(services, limiter=ClockedLimiter({"email": RateLimit(0.1, 1.0)}, clock), sleep=clock.sleep)
    first, second = add_deliveries(services, customer_id, 2)
    outcomes = slow.deliver_many([first, second], NOON)
    assert outcomes[first].status == "sent"
    assert (outcomes[second].status, outcomes[second].retry_in) == ("pending", pytest.approx(10.0))
    assert outcomes[second].error == "rate limit of email: waits 10.0s"
    row = rows(services, [second])[second]
    assert (row.status, row.attempts) == ("pending", 0)  # waiting is not a failed attempt


def test_a_bounce_suppresses_the_address_it_went_to(world):
    services, customer_id, stub = world
    first, second = add_deliveries(services, customer_id, 2)
    stub.fail("permanent", "550 5.1.1 no such user", bounce=True)
    deliverer = make_deliverer(services, bounces=record_bounce)
    assert deliverer.deliver(first, NOON).status == "failed"
    with services.sessions() as session:
        [entry] = session.execute(select(Suppression)).scalars().all()
    assert (entry.channel, entry.address, entry.reason) == ("email", "ada@example.com", "hard_bounce")
    outcome = deliverer.deliver(second, NOON)
    assert (outcome.status, outcome.error) == ("held", "suppressed: hard bounce on email")


def test_a_deferred_send_is_held_if_its_enrollment_converted_meanwhile(world):
    services, customer_id, stub = world
    deferred, made_at_conversion = add_deliveries(services, customer_id, 2)
    converted_at = NOON + timedelta(hours=1)
    with services.sessions.begin() as session:
        session.get(Delivery, deferred).not_before = converted_at  # quiet hours deferred it
        late = session.get(Delivery, made_at_conversion)
        late.created_at, late.not_before = converted_at, converted_at  # made by the conversion itself
        enrollment = session.get(Enrollment, "e-1")
        enrollment.status, enrollment.ended_at = "converted", converted_at
    outcomes = make_deliverer(services).deliver_many([deferred, made_at_conversion], converted_at)
    assert (outcomes[deferred].status, outcomes[deferred].error) == (
        "held", f"the enrollment converted at {converted_at.isoformat()} while this send waited",
    )
    assert outcomes[made_at_conversion].status == "sent"


def test_a_marketing_send_judged_after_its_enrollment_converted_is_held_and_a_receipt_is_not(world):
    # Given a reminder and a receipt made at noon, whose queue was behind: the customer
    # ordered at 12:00:05, before either was judged.
    services, customer_id, stub = world
    [reminder] = add_deliveries(services, customer_id)
    [receipt] = add_deliveries(services, customer_id, kind="transactional")
    ordered_at = NOON + timedelta(seconds=5)
    with services.sessions.begin() as session:
        enrollment = session.get(Enrollment, "e-1")
        enrollment.status, enrollment.ended_at = "converted", ordered_at
    outcomes = make_deliverer(services).deliver_many([reminder, receipt], ordered_at + timedelta(seconds=1))
    assert [(outcomes[i].status, outcomes[i].error) for i in (reminder, receipt)] == [
        ("held", f"the enrollment converted at {ordered_at.isoformat()} while this send waited"), ("sent", None),
    ]


class SlowDown(StubChannel):
    """A provider that answers 429 with Retry-After: 30."""

    def deliver(self, message):  # type: ignore[no-untyped-def]
        return Result.retryable("429 too many requests", retry_after=timedelta(seconds=30))


def test_a_retry_waits_at_least_what_the_provider_asked(world):
    services, customer_id, _ = world
    services.adapters["email"] = SlowDown("email")
    [delivery_id] = add_deliveries(services, customer_id)
    outcome = make_deliverer(services).deliver(delivery_id, NOON)
    assert (outcome.status, outcome.retry_in) == ("pending", 30.0)  # not backoff(1), one second


def test_a_channel_may_have_its_own_number_of_attempts(world):
    services, customer_id, stub = world
    stub.fail("retryable", "421 try later", times=None)
    first, second = add_deliveries(services, customer_id, 2)
    deliverer = make_deliverer(services, max_attempts={"email": 2})
    assert deliverer.deliver(first, NOON).status == "pending"
    assert deliverer.deliver(first, NOON).status == "dead"  # the second attempt was the last
    assert make_deliverer(services, max_attempts={"sms": 2}).deliver(second, NOON).status == "pending"


def test_attempts_for_a_channel_not_installed_stop_start_up(sqlite_url):
    from engine import ConfigError
    from tests.conftest import make_services

    with pytest.raises(ConfigError, match="CHANNEL_MAX_ATTEMPTS names the channel 'emial', which is not installed. "
                                          "Did you mean 'email'?"):
        make_services(sqlite_url, max_attempts={"emial": 3})
