"""The baseline of bench/e2e.py: a Dramatiq actor that does nothing but count itself.

    dramatiq noop --processes P --threads T      (with REDIS_URL and BENCH_NAMESPACE set)

It runs on a RedisBroker built like the engine's (same middleware, its own namespace);
the count (one INCR) is how the bench sees that every message was consumed.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ["BENCH_NAMESPACE"]
COUNTER = f"{NAMESPACE}-done"

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=f"{NAMESPACE}-dramatiq")
dramatiq.set_broker(broker)
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@dramatiq.actor(queue_name="noop", max_retries=0)
def noop(n: int) -> None:
    """Count one message."""
    _counter.incr(COUNTER)
