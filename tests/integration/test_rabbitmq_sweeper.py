"""The sweeper on RabbitMQ: a backlog waiting on its queues is left alone, lost messages are sent once again.

RabbitMQ shows no message without taking it, so the sweeper goes by each queue's count
(docs/operations.md, "The database is the source of truth"): a queue with messages
waiting carries all its rows, an empty one none. Judged by what waits on RabbitMQ.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.queues import queue_depths
from engine.scheduler import Scheduler
from engine.services import Services
from tests.backlog import build_backlog

pytestmark = pytest.mark.integration

#: 2,000 events in messages of 100, 200 due timers in messages of 100, 200 email deliveries in messages of 50
BACKLOG = {"events": 2_000, "timers": 200, "deliveries": 200}
WAITING = {"events": 20, "timers": 2, "deliveries.email": 4}


def waiting(services: Services) -> dict[str, int]:
    """Messages ready on each queue that has any."""
    return {d.name: d.ready + d.delayed for d in queue_depths(services.broker) if d.ready + d.delayed}


def sweep_until_done(scheduler: Scheduler, now: datetime) -> None:
    for _ in range(100):
        if scheduler.sweep(now) == 0:
            return
    raise AssertionError("the sweeps never ran out of work")


def test_a_backlog_waiting_on_rabbitmq_is_not_enqueued_again(rabbitmq_services: Services):
    # Given a backlog enqueued on RabbitMQ, no worker taking it
    at = datetime.now(timezone.utc)
    build_backlog(rabbitmq_services, at, **BACKLOG)
    assert waiting(rabbitmq_services) == WAITING
    # When the scheduler sweeps, long after JOURNEY_SWEEP_AFTER
    sweep_until_done(Scheduler(rabbitmq_services), at + rabbitmq_services.settings.sweep_after + timedelta(hours=1))
    # Then no message was added: every row is still carried by its one message
    assert waiting(rabbitmq_services) == WAITING


@pytest.fixture
def purged(rabbitmq_services: Services) -> datetime:
    """Given the backlog, its messages lost (every queue purged); when it was built."""
    at = datetime.now(timezone.utc)
    build_backlog(rabbitmq_services, at, **BACKLOG)
    rabbitmq_services.broker.flush_all()
    assert waiting(rabbitmq_services) == {}
    return at


def test_a_backlog_whose_messages_were_purged_is_enqueued_once(rabbitmq_services: Services, purged: datetime):
    # When the scheduler sweeps until it finds nothing more
    sweep_until_done(Scheduler(rabbitmq_services), purged + rabbitmq_services.settings.sweep_after + timedelta(hours=1))
    # Then every row is carried by one message again, as many as before
    assert waiting(rabbitmq_services) == WAITING


def test_work_younger_than_the_threshold_is_left_to_its_message_even_on_an_empty_queue(rabbitmq_services: Services,
                                                                                        purged: datetime):
    # When the scheduler sweeps before JOURNEY_SWEEP_AFTER has passed
    Scheduler(rabbitmq_services).sweep(purged + rabbitmq_services.settings.sweep_after / 2)
    # Then nothing is enqueued yet: a message may still be on its way to a worker
    assert waiting(rabbitmq_services) == {}
