"""The per-send transactions of a process's delivery threads committed in groups (PostgreSQL).

Each send's ``sending`` mark is committed before its adapter is called, as alone; threads
that arrive while the groups in flight are being committed go together in the next one; a
failing row fails only its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, update

from channels.base import Message
from channels.base import Result as SendResult
from channels.stub import StubChannel
from engine.delivery import CLAIM_CHUNK, GroupRecorder, autocommit
from engine.services import Services
from engine.storage.models import Delivery
from tests.unit.test_delivery import make_deliverer
from tests.unit.test_policy import NOON, add_deliveries, make_world


@pytest.fixture
def world(pg_services):  # type: ignore[no-untyped-def]
    return make_world(pg_services, "UTC")


def claim(services: Services, ids: list[int]) -> None:
    with services.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(status="claimed", updated_at=NOON))


def mark(delivery_id: Any) -> dict[str, Any]:
    return {"b_id": delivery_id, "b_claimed_at": NOON, "b_now": NOON}


@contextmanager
def first_statement_held(services: Services, recorder: GroupRecorder, waiting: int) -> Iterator[list[int]]:
    """The first group's statement waits until ``waiting`` more records wait behind it; yields the marks of each statement."""
    groups: list[int] = []

    def hold(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        if "jsonb_to_recordset(CAST(%(marks)s" not in statement:
            return
        groups.append(parameters["marks"].count('"b_id"'))
        if len(groups) == 1:
            deadline = time.monotonic() + 30
            while len(recorder._waiting) < waiting and time.monotonic() < deadline:
                time.sleep(0.01)

    engine = services.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", hold)
    try:
        yield groups
    finally:
        event.remove(engine, "before_cursor_execute", hold)


def run_all(calls: list[Any]) -> list[Any]:
    """Run each call in a thread of its own, the first one first; their results (or errors)."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    threads[0].start()
    time.sleep(0.05)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_threads_arriving_during_a_commit_go_together_in_the_next(world):
    # Given four claimed deliveries, and a recorder whose first commit is slow
    services, customer_id, _ = world
    ids = add_deliveries(services, customer_id, 4)
    claim(services, ids)
    recorder = GroupRecorder(autocommit(services.sessions.kw["bind"]), in_flight=1)
    # When four threads each mark one, the last three while the first one's commit runs
    with first_statement_held(services, recorder, waiting=3) as groups:
        run_all([lambda i=i: recorder.record([], [], mark(i)) for i in ids])
    # Then two statements carried them: the first alone, the other three together
    assert groups == [1, 3]


def test_a_bad_row_in_a_group_fails_only_its_own_thread(world):
    # Given three claimed deliveries and a fourth record whose mark cannot be read
    services, customer_id, _ = world
    ids = add_deliveries(services, customer_id, 3)
    claim(services, ids)
    recorder = GroupRecorder(autocommit(services.sessions.kw["bind"]), in_flight=1)
    calls = [lambda i=i: recorder.record([], [], mark(i)) for i in ids[:1]]
    calls += [lambda: recorder.record([], [], mark("not a number"))]
    calls += [lambda i=i: recorder.record([], [], mark(i)) for i in ids[1:]]
    # When the bad one waits in a group with two good ones
    with first_statement_held(services, recorder, waiting=3):
        results = run_all(calls)
    # Then the good ones are marked, and only the bad one raised
    assert [r if isinstance(r, bool) else type(r).__name__ for r in results] == [True, "DataError", True, True]


class WatchingChannel(StubChannel):
    """A stub that reads, from a connection of its own, each delivery's status as its send begins."""

    def __init__(self, services: Services) -> None:
        super().__init__("email")
        self.services, self.seen, self._lock = services, [], threading.Lock()

    def deliver(self, message: Message) -> SendResult:
        with self.services.sessions() as session:
            status = session.execute(select(Delivery.status).where(Delivery.key == message.idempotency_key)).scalar_one()
        with self._lock:
            self.seen.append(status)
        return super().deliver(message)


def test_each_send_of_threads_sending_together_finds_its_mark_committed(world):
    # Given eight threads, each with a chunk of deliveries, and one deliverer
    services, customer_id, _ = world
    chunks = [add_deliveries(services, customer_id, CLAIM_CHUNK, kind="transactional") for _ in range(8)]
    channel = WatchingChannel(services)
    services.adapters["email"] = channel
    deliverer = make_deliverer(services)
    # When they deliver at once
    run_all([lambda ids=ids: deliverer.deliver_many(ids, NOON) for ids in chunks])
    # Then every send began with its row committed ``sending`` (and nothing else)
    assert channel.seen == ["sending"] * (8 * CLAIM_CHUNK)


def test_every_thread_gets_its_own_mark_back_with_groups_in_flight_together(world):
    # Given eight threads, each with 100 claimed deliveries, and two groups committed at once
    services, customer_id, _ = world
    ids = add_deliveries(services, customer_id, 800)
    claim(services, ids)
    recorder = GroupRecorder(autocommit(services.sessions.kw["bind"]), in_flight=2)

    def mark_each(mine: list[int]) -> list[int]:
        return [i for i in mine if not recorder.record([], [], mark(i))]

    # When they mark theirs one after the other, all at once
    results = run_all([lambda t=t: mark_each(ids[t::8]) for t in range(8)])
    # Then each was told its mark took (a thread woken while its record was in another's
    # group once led an empty group and was told it had not)
    assert results == [[]] * 8
