"""The Dramatiq broker: Redis when REDIS_URL is set, the in-process stub otherwise.

Actors are declared on an explicit broker (see :mod:`engine.workers.actors`), so a test
can build as many engines as it likes, each on its own broker, in one process.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from engine.settings import Settings


def make_broker(settings: Settings) -> dramatiq.Broker:
    """Return a new broker for ``settings``: Redis under the settings' namespace, or a stub."""
    if settings.redis_url:
        # Every key lives under the namespace, so engines (or tests) can share one Redis.
        return RedisBroker(url=settings.redis_url, namespace=f"{settings.namespace}-dramatiq")
    return StubBroker()
