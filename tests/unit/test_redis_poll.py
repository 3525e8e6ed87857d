"""A worker's Redis consumer polls an empty queue at least every REDIS_IDLE_POLL_MS (real Redis).

Dramatiq backs off up to the worker's timeout (a second by default) while a queue is
empty, so a message sent to a quiet queue could wait that long before a worker saw it.
"""

from __future__ import annotations

from unittest import mock

import dramatiq.brokers.redis

from engine.settings import Settings
from engine.workers.broker import REDIS_IDLE_POLL_MS, make_broker
from tests.conftest import REDIS_URL


def test_an_idle_consumer_sleeps_at_most_the_poll_cap_between_polls(redis_namespace: str) -> None:
    broker = make_broker(Settings(redis_url=REDIS_URL, namespace=redis_namespace))
    broker.declare_queue("events")
    consumer = broker.consume("events", prefetch=1, timeout=1000)  # what a dramatiq Worker passes by default
    sleeps: list[float] = []
    try:
        with mock.patch.object(dramatiq.brokers.redis.time, "sleep", sleeps.append):
            for _ in range(20):  # enough misses for the backoff to pass a second without the cap
                assert next(consumer) is None
    finally:
        consumer.close()
        broker.close()
    assert max(sleeps) <= REDIS_IDLE_POLL_MS / 1000
