"""The Dramatiq broker: Redis when REDIS_URL is set, the in-process stub otherwise.

Actors are declared on an explicit broker (see :mod:`engine.workers.actors`), so a test
can build as many engines as it likes, each on its own broker, in one process.
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from engine.settings import Settings


#: Seconds to connect to Redis, and to wait for one answer.
REDIS_CONNECT_TIMEOUT = 5
REDIS_TIMEOUT = 10


def make_broker(settings: Settings) -> dramatiq.Broker:
    """Return a new broker for ``settings``: Redis under the settings' namespace, or a stub."""
    if settings.redis_url:
        # Every key lives under the namespace, so engines (or tests) can share one Redis.
        # A Redis that stops answering fails a call after the timeouts instead of hanging
        # it: an API request waits for its enqueue, a worker's consumer reconnects.
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_TIMEOUT
        )
        return RedisBroker(client=client, namespace=f"{settings.namespace}-dramatiq")
    return StubBroker()
