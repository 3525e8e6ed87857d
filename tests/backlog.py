"""A backlog of queued work for the sweeper's tests and bench/sweep.py, and a count of the messages carrying it.

The rows are written and enqueued the way the engine does it (events in messages of 100
ids, due timers through the scheduler, deliveries in messages of 50 per channel), and
no worker takes them: the backlog waits on its queues.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import insert, select

from engine import deploy
from engine.orchestrator import Followups
from engine.scheduler import Scheduler
from engine.services import Services
from engine.storage.models import Customer, Delivery, Enrollment, Event, Timer

JOURNEY = Path(__file__).resolve().parents[1] / "journeys" / "nps_survey.yaml"
CHUNK = 5000  # rows per INSERT


def build_backlog(services: Services, at: datetime, events: int, timers: int = 0, deliveries: int = 0) -> None:
    """Store ``events`` events, ``timers`` timers due and ``deliveries`` email deliveries at ``at``, and enqueue them."""
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(JOURNEY)], at)
        customer = Customer(external_id="backlog", traits={"email": "backlog@example.com"}, timezone="UTC",
                            first_seen_at=at, last_seen_at=at, updated_at=at)
        session.add(customer)
        session.flush()
        session.add(Enrollment(id="backlog", journey_id="nps_survey", version=1, customer_id=customer.id,
                               status="active", started_at=at, updated_at=at))
        customer_id = customer.id
    event = {"source": "backlog", "type": "track", "event": "Signed Up", "user_id": "backlog", "properties": {},
             "traits": {}, "context": {}, "integrations": {}, "timestamp": at, "received_at": at}
    delivery = {"enrollment_id": "backlog", "customer_id": customer_id, "journey_id": "nps_survey", "version": 1,
                "step": "survey", "channel": "email", "template": "nps_survey", "kind": "marketing",
                "topic": "surveys", "created_at": at, "enqueued_at": at, "updated_at": at}
    for start in range(0, max(events, timers, deliveries), CHUNK):
        with services.sessions.begin() as session:
            stop = start + CHUNK
            rows = [dict(event, message_id=f"b{i}") for i in range(start, min(stop, events))]
            if rows:
                services.enqueue_events(list(session.execute(insert(Event).returning(Event.id), rows).scalars()))
            rows = [{"key": f"backlog:{i}", "enrollment_id": "backlog", "due_at": at} for i in range(start, min(stop, timers))]
            if rows:
                session.execute(insert(Timer), rows)
            rows = [dict(delivery, key=f"backlog:{i}") for i in range(start, min(stop, deliveries))]
            if rows:
                ids = session.execute(insert(Delivery).returning(Delivery.id), rows).scalars()
                services.dispatch(Followups(deliveries=[(i, "email") for i in ids]))
    Scheduler(services).fire_due(at)


def times_carried(services: Services) -> Counter[tuple[str, int]]:
    """How many pending rows of each actor are carried by how many messages: ``{(actor, times): rows}``.

    A backlog carried once is ``{("process_events", 1): events, ("fire_timers", 1): timers, ("deliver", 1): deliveries}``.
    """
    carried = message_ids(services.broker)
    with services.sessions() as session:
        rows: list[tuple[str, object]] = []
        rows += [("process_events", i) for i in session.execute(select(Event.id).where(Event.processed_at.is_(None))).scalars()]
        rows += [("fire_timers", k) for k in session.execute(select(Timer.key).where(Timer.fired_at.is_(None))).scalars()]
        rows += [("deliver", i) for i in session.execute(select(Delivery.id).where(Delivery.status == "pending")).scalars()]
    return Counter((actor, carried[actor, row_id]) for actor, row_id in rows)


def message_ids(broker: dramatiq.Broker) -> Counter[tuple[str, object]]:
    """How many messages on the broker carry each (actor, id), dead letters left out."""
    if isinstance(broker, RedisBroker):
        keys = [k for k in broker.client.scan_iter(f"{broker.namespace}:*.msgs") if not k.endswith(b".XQ.msgs")]
        messages = [data for key in keys for data in broker.client.hvals(key)]
    elif isinstance(broker, StubBroker):
        messages = [data for queue in broker.queues.values() for data in list(queue.queue)]
    else:
        raise TypeError(f"cannot read the messages of {type(broker).__name__}")
    found: Counter[tuple[str, object]] = Counter()
    for data in messages:
        message = json.loads(data)
        first = message["args"][0]
        found.update((message["actor_name"], i) for i in (first if isinstance(first, list) else [first]))
    return found


def message_count(broker: dramatiq.Broker) -> int:
    """How many messages the broker holds, dead letters left out."""
    if isinstance(broker, RedisBroker):
        return sum(broker.client.hlen(k) for k in broker.client.scan_iter(f"{broker.namespace}:*.msgs")
                   if not k.endswith(b".XQ.msgs"))
    if isinstance(broker, StubBroker):
        return sum(queue.qsize() for queue in broker.queues.values())
    raise TypeError(f"cannot count the messages of {type(broker).__name__}")
