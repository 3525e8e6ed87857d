"""The services one engine process works with: settings, database, broker and actors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import dramatiq
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine.settings import Settings
from engine.storage.db import make_engine, make_sessionmaker
from engine.workers.actors import Actors, declare
from engine.workers.broker import make_broker

log = logging.getLogger(__name__)

# Events per queue message: enough to make a batch cheap to enqueue, small enough that
# a retry redoes little.
EVENTS_PER_MESSAGE = 100


@dataclass
class Services:
    """Everything a process of the engine needs, built once at start-up.

    Attributes:
        settings: the settings read from the environment.
        engine / sessions: the database, the source of truth.
        broker / actors: the queue that carries work, and the actors declared on it.
    """

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    broker: dramatiq.Broker
    actors: Actors = field(init=False)

    def __post_init__(self) -> None:
        self.actors = declare(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Connect to the database and the broker named by ``settings``."""
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        return cls(settings, engine, make_sessionmaker(engine), make_broker(settings))

    def enqueue_events(self, event_ids: Sequence[int]) -> bool:
        """Send the ids of committed events to the ``events`` queue; False if that failed.

        A failure loses nothing: the rows stay unprocessed and the sweeper sends them again.
        """
        try:
            for start in range(0, len(event_ids), EVENTS_PER_MESSAGE):
                self.actors.process_events.send(list(event_ids[start : start + EVENTS_PER_MESSAGE]))
        except Exception:  # noqa: BLE001 - the broker being down must not fail the request
            log.warning("could not enqueue %d events; the sweeper will", len(event_ids), exc_info=True)
            return False
        return True

    def close(self) -> None:
        """Release the database connections and the broker."""
        self.broker.close()
        self.engine.dispose()
