"""Journeys end to end with real processes: ``journey serve``, ``journey worker`` and
``journey scheduler`` on PostgreSQL and Redis, journeys deployed with ``journey deploy``.

Every check reads the database, the source of truth: enrollments, timers and deliveries
happen once, also when the worker process is killed in the middle and another one starts.
The ``log`` channel needs no peer; its messages show in the worker's log, which the
crash test reads to see that no message went out twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from engine.services import Services
from engine.storage.models import Delivery, Enrollment, Event, Timer, TraceEntry
from tests.conftest import REDIS_URL, create_key, free_port, make_services
from tests.integration.conftest import eventually, stop, wait_for_http

pytestmark = pytest.mark.integration

QUICK = """\
id: quick_reminder
name: Quick reminder
stage: consideration
trigger:
  event: checkout_started
goal:
  event: order_completed
steps:
  - id: hello
    send: {channel: log, text: "hello {{ customer.id }}"}
  - id: wait_2s
    wait: 2s
  - id: reminder
    send: {channel: log, text: "still there, {{ customer.id }}?"}
"""

SLOW = """\
id: slow_nudge
name: Slow nudge
stage: awareness
trigger:
  event: trial_started
goal:
  event: subscribed
steps:
  - id: wait_1h
    wait: 1h
  - id: nudge
    send: {channel: log, text: "subscribe, {{ customer.id }}"}
"""

WORKER_THREADS = 4
LOGGED = re.compile(r"log message (\S+) to customer")

@dataclass
class Engine:
    """The processes of one engine, and a session on its database to check what they did."""

    url: str
    key: str
    env: dict[str, str]
    services: Services
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_files: list[object] = field(default_factory=list)

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``python -m engine ARGS`` in its own process group, its output in ``logs/NAME.log``."""
        output = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        self._log_files.append(output)
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", *args], env={**self.env, **env}, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # so a kill reaches Dramatiq's worker processes too
        )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children: no chance to finish or acknowledge anything."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            stop(process)
            try:
                os.killpg(process.pid, signal.SIGKILL)  # any child left behind
            except ProcessLookupError:
                pass
        for output in self._log_files:
            output.close()  # type: ignore[attr-defined]

    def post(self, path: str, body: dict[str, object]) -> None:
        response = httpx.post(f"{self.url}{path}", json=body, auth=(self.key, ""), timeout=30)
        assert response.status_code == 200, response.text

    def track(self, user_id: str, event: str, **body: object) -> None:
        self.post("/v1/track", {"userId": user_id, "event": event, **body})

    def scalar(self, statement):  # type: ignore[no-untyped-def]
        """The one value ``statement`` selects, read now."""
        with self.services.sessions() as session:
            return session.execute(statement).scalar_one()

    def logged_keys(self, *names: str) -> Counter[str]:
        """Idempotency keys of the messages the ``log`` channel wrote in these processes' logs."""
        found: Counter[str] = Counter()
        for name in names:
            found.update(LOGGED.findall((self.logs / f"{name}.log").read_text(errors="replace")))
        return found


def deliveries_by_status(engine: Engine) -> dict[str, int]:
    with engine.services.sessions() as session:
        return dict(session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())


@pytest.fixture
def engine(tmp_path: Path, pg_url: str, redis_namespace: str) -> Iterator[Engine]:
    """Given journeys deployed with ``journey deploy``, and serve, worker and scheduler running."""
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "quick_reminder.yaml").write_text(QUICK)
    (journeys / "slow_nudge.yaml").write_text(SLOW)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = dict(
        os.environ,
        DATABASE_URL=pg_url,
        REDIS_URL=REDIS_URL,
        JOURNEY_NAMESPACE=redis_namespace,
        JOURNEY_WORKER_PROCESSES="1",
        JOURNEY_WORKER_THREADS=str(WORKER_THREADS),
        JOURNEY_SWEEP_AFTER="2s",
        JOURNEY_SWEEP_INTERVAL="1s",
        LOG_LEVEL="WARNING",
    )
    services = make_services(pg_url, redis_url=REDIS_URL, namespace=redis_namespace)
    port = free_port()
    running = Engine(f"http://127.0.0.1:{port}", create_key(services), env, services, logs)
    try:
        deployed = subprocess.run(
            [sys.executable, "-m", "engine", "deploy", str(journeys)], env=env, capture_output=True, text=True, timeout=60
        )
        assert deployed.returncode == 0, deployed.stderr
        assert "deployed 2 journey versions" in deployed.stdout
        web = running.start("web", "serve", "--port", str(port))
        running.start("worker", "worker", LOG_LEVEL="INFO")  # INFO: the log channel's messages
        running.start("scheduler", "scheduler")
        wait_for_http(f"{running.url}/health", web)
        yield running
    finally:
        running.stop_all()
        services.close()


def test_an_event_enrolls_once_and_its_log_message_is_sent_once(engine: Engine):
    # When a checkout starts, and the SDK posts the same event again (a retry)
    body = {"properties": {"cart_value": 12}, "messageId": "m-ada-1"}
    engine.track("ada", "checkout_started", **body)
    engine.track("ada", "checkout_started", **body)

    # Then one enrollment is made and its first message is recorded sent
    eventually(lambda: engine.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")),
               lambda sent: sent >= 1, "sent deliveries")
    time.sleep(3)  # two sweeps after the threshold: nothing is redone
    with engine.services.sessions() as session:
        enrollments = session.execute(select(Enrollment.journey_id, Enrollment.trigger_event_id)).all()
        hello = session.execute(select(Delivery).where(Delivery.step == "hello")).scalars().all()
    assert engine.scalar(select(func.count()).select_from(Event)) == 1
    assert [journey for journey, _ in enrollments] == ["quick_reminder"]
    assert len(hello) == 1
    assert (hello[0].channel, hello[0].status, hello[0].attempts) == ("log", "sent", 1)
    assert hello[0].provider_id == f"log:{hello[0].key}"


def test_a_2s_wait_is_fired_by_the_scheduler_process_and_its_message_sent_once(engine: Engine):
    # Given a customer enrolled, who got the first message
    engine.track("bob", "checkout_started", properties={"cart_value": 30})
    eventually(lambda: engine.scalar(select(func.count()).select_from(Timer)), lambda n: n == 1, "timers")

    # When the 2s wait is over, the scheduler fires the timer and the reminder goes out
    eventually(lambda: deliveries_by_status(engine), lambda by: by == {"sent": 2}, "deliveries by status", 30)
    time.sleep(3)  # sweeps after the threshold redo nothing

    # Then the timer fired once, and the reminder was made by its firing, not before:
    # read from the rows and the trace (the order things happened in), never by comparing
    # two wall-clock times, which a busy machine or a clock step can reorder.
    with engine.services.sessions() as session:
        timer = session.execute(select(Timer)).scalar_one()
        enrollment = session.execute(select(Enrollment)).scalar_one()
        sent = {d.step: d for d in session.execute(select(Delivery)).scalars()}
        trace = [(t.step, t.what) for t in session.execute(select(TraceEntry).order_by(TraceEntry.id)).scalars()
                 if not t.what.startswith("delivery ")]
    assert timer.due_at == enrollment.started_at + timedelta(seconds=2)  # the wait, as the runtime set it
    assert timer.fired_at is not None
    assert sent["reminder"].created_at == timer.fired_at  # made in the firing's transaction
    assert sent["hello"].created_at == enrollment.started_at  # made on the trigger
    assert trace.index(("wait_2s", "resume")) < trace.index(("reminder", "run")), trace
    assert set(sent) == {"hello", "reminder"}
    assert [d.attempts for d in sent.values()] == [1, 1]
    assert (enrollment.status, enrollment.ended_at is not None) == ("completed", True)
    assert deliveries_by_status(engine) == {"sent": 2}


def test_the_goal_event_converts_a_waiting_enrollment(engine: Engine):
    # Given a customer waiting an hour in slow_nudge
    engine.track("cy", "trial_started")
    eventually(lambda: engine.scalar(select(func.count()).select_from(Timer).where(Timer.fired_at.is_(None))),
               lambda n: n == 1, "pending timers")

    # When they subscribe
    engine.track("cy", "subscribed")

    # Then the enrollment ends as a conversion, its timer is cancelled and nothing is sent
    status = eventually(
        lambda: engine.scalar(select(Enrollment.status).where(Enrollment.journey_id == "slow_nudge")),
        lambda s: s != "active", "enrollment status",
    )
    assert status == "converted"
    assert engine.scalar(select(func.count()).select_from(Timer).where(Timer.fired_at.is_(None))) == 0
    assert engine.scalar(select(func.count()).select_from(Delivery)) == 0
    assert engine.scalar(select(func.count()).select_from(Event).where(Event.processed_at.is_(None))) == 0


def test_a_worker_killed_in_the_middle_loses_nothing_and_sends_nothing_twice(engine: Engine):
    customers = 400
    # Given checkouts from many customers, arriving while the worker is busy
    for start in range(0, customers, 50):
        engine.post("/v1/batch", {"batch": [
            {"type": "track", "userId": f"c{i}", "event": "checkout_started", "messageId": f"m-c{i}"}
            for i in range(start, start + 50)
        ]})

    # When the worker is killed (SIGKILL, its processes too) part way through
    sent_before = eventually(lambda: deliveries_by_status(engine).get("sent", 0), lambda n: n >= 20,
                             "sent before the kill")
    engine.kill("worker")
    assert sent_before < 2 * customers, "the worker finished before it was killed; the test proved nothing"
    # and a new worker starts
    engine.start("worker-2", "worker", LOG_LEVEL="INFO")

    # Then every customer is enrolled once and gets both messages, each at most once:
    # a message the killed worker was sending is left `unknown` (after 5 x JOURNEY_SWEEP_AFTER)
    # rather than sent again; what it had claimed but not begun sending is sent by the new one
    def settled() -> dict[str, int]:
        return deliveries_by_status(engine)

    by_status = eventually(settled, lambda by: sum(by.get(s, 0) for s in ("sent", "unknown")) == 2 * customers,
                           "deliveries by status", timeout=120)
    with engine.services.sessions() as session:
        enrollments = session.execute(
            select(Enrollment.customer_id, func.count()).group_by(Enrollment.customer_id)
        ).all()
        per_step = Counter(session.execute(select(Delivery.enrollment_id, Delivery.step)).all())
        attempts = Counter(session.execute(select(Delivery.attempts)).scalars())
        unprocessed = session.execute(select(func.count()).select_from(Event).where(Event.processed_at.is_(None))).scalar_one()
        unfired = session.execute(select(func.count()).select_from(Timer).where(Timer.fired_at.is_(None))).scalar_one()
    assert len(enrollments) == customers and all(n == 1 for _, n in enrollments)
    assert len(per_step) == 2 * customers and set(per_step.values()) == {1}
    assert set(by_status) <= {"sent", "unknown"}
    assert by_status.get("unknown", 0) <= WORKER_THREADS  # at most the send in flight of each thread
    assert set(attempts) == {1}, "an attempt was counted twice"
    assert (unprocessed, unfired) == (0, 0)
    logged = engine.logged_keys("worker", "worker-2")
    assert [key for key, n in logged.items() if n > 1] == []
    assert len(logged) >= by_status["sent"] - sent_before  # what the new worker sent, it logged
