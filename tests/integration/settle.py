"""Waiting for a real worker to finish the work due at the virtual clock's instant."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from engine.queues import queue_depths
from engine.services import Services
from engine.storage.models import Delivery, Event, Timer


def settle(services: Services, timeout: float = 30.0) -> None:
    """Wait until the worker has done all the work due now (``services.clock()``).

    First the queues, in one snapshot: when no message is ready, taken by a worker or
    delayed, no actor is running, and none will (only the test enqueues, and it waits
    here), so what the database says next is final for this instant. Read in the other
    order, or one queue at a time, a timer fired between two reads and its delivery's
    message was counted nowhere: the clock moved on before that delivery was judged
    (grace's reminder was then judged at 08:00, not deferred from 07:30). Then the
    database, the source of truth, for work whose message was lost.

    Raises:
        AssertionError: an event failed, a send failed and is being retried, or work
            was still pending after ``timeout`` seconds.
    """
    now = services.clock()
    deadline = time.monotonic() + timeout
    while True:
        busy = sum(d.ready + d.in_flight + d.delayed for d in queue_depths(services.broker))
        with services.sessions() as session:
            failed = session.execute(select(Event.error).where(Event.error.is_not(None))).scalars().first()
            retrying = session.execute(
                select(Delivery.step, Delivery.error)
                .where(Delivery.status == "pending", Delivery.not_before.is_(None), Delivery.error.is_not(None))
            ).first()
            busy += session.execute(
                select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
            ).scalar_one()
            busy += session.execute(
                select(func.count()).select_from(Delivery).where(
                    Delivery.status.in_(("claimed", "sending"))
                    | ((Delivery.status == "pending") & Delivery.enqueued_at.is_not(None)
                       & (Delivery.not_before.is_(None) | (Delivery.not_before <= now))),
                )  # a deferred send is released (enqueued) by the scheduler's sweep
            ).scalar_one()
            busy += session.execute(
                select(func.count()).select_from(Timer)
                .where(Timer.fired_at.is_(None), Timer.enqueued_at.is_not(None), Timer.due_at <= now)
            ).scalar_one()
        assert failed is None, f"an event failed: {failed}"
        assert retrying is None, f"a send failed and is being retried: {tuple(retrying)}"
        if not busy:
            return
        assert time.monotonic() < deadline, f"{busy} pieces of work still pending at {now} after {timeout:.0f}s"
        time.sleep(0.02)
