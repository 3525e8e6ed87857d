"""The baseline of bench/e2e.py: a Dramatiq actor that does nothing but count itself.

    dramatiq noop --path bench --processes P --threads T      (with the engine's environment and BENCH_NAMESPACE set)

Its broker is the engine's (:func:`engine.workers.broker.make_broker`, from the same
environment: Redis today, whatever ``journey worker`` uses once that changes), under its
own namespace. Each drain is a Redis counter named in its messages: one ``INCR`` per
message; the message that makes it 1 and the one that makes it ``total`` also note the
time, so the bench reads the drain's first and last message without polling for them.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis

from engine.environment import read_settings
from engine.workers.broker import make_broker

NAMESPACE = os.environ["BENCH_NAMESPACE"]
QUEUE = "noop"

_settings = read_settings()
broker = make_broker(_settings.replace(namespace=NAMESPACE))
dramatiq.set_broker(broker)
_counter = redis.Redis.from_url(_settings.redis_url or os.environ["REDIS_URL"])


def first_key(drain: str) -> str:
    return f"{drain}:first"


def last_key(drain: str) -> str:
    return f"{drain}:last"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(drain: str, total: int) -> None:
    """Count one message of ``drain``; the first and the last note when they ran."""
    done = _counter.incr(drain)
    if done == 1:
        _counter.set(first_key(drain), repr(time.time()))
    if done == total:
        _counter.set(last_key(drain), repr(time.time()))
