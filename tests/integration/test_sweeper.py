"""Losing Redis loses nothing: the scheduler's sweeper re-enqueues pending work, and only work whose message was lost."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import redis
from sqlalchemy import func, select

from engine.scheduler import Scheduler
from engine.storage.models import Event
from tests.backlog import build_backlog, message_ids, times_carried
from tests.conftest import REDIS_URL, free_port
from tests.integration.conftest import spawn, stop, wait_for_http

pytestmark = pytest.mark.integration


def test_events_whose_messages_were_lost_are_swept_back_and_processed(pg_url, redis_namespace, engine_env):
    from tests.conftest import create_key, make_services

    services = make_services(pg_url, redis_url=REDIS_URL, namespace=redis_namespace)
    key = create_key(services)
    port = free_port()
    web = spawn(["serve", "--port", str(port)], engine_env)
    processes = [web]
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", web)
        # Given events accepted while no worker runs
        batch = [{"type": "track", "userId": f"u{i}", "event": "Signed Up"} for i in range(30)]
        response = httpx.post(f"http://127.0.0.1:{port}/v1/batch", json={"batch": batch}, auth=(key, ""))
        assert response.status_code == 200
        # When Redis loses every queued message
        client = redis.Redis.from_url(REDIS_URL)
        deadline = time.monotonic() + 10  # the enqueue follows the response
        lost: list[bytes] = []
        while not lost and time.monotonic() < deadline:
            lost = list(client.scan_iter(f"{redis_namespace}*"))
            time.sleep(0.05)
        assert lost, "the events should have been enqueued"
        client.delete(*lost)
        client.close()
        # And a scheduler and a worker start
        env = dict(engine_env, JOURNEY_SWEEP_AFTER="1s", JOURNEY_SWEEP_INTERVAL="1s")
        processes.append(spawn(["scheduler"], env))
        processes.append(spawn(["worker"], env))
        # Then every event is processed, once
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and done < 30:
            with services.sessions() as session:
                done = session.execute(
                    select(func.count()).select_from(Event).where(Event.processed_at.is_not(None))
                ).scalar_one()
            time.sleep(0.3)
        assert done == 30
    finally:
        for process in processes:
            stop(process)
        services.close()


BACKLOG = {"events": 20_000, "timers": 2_000, "deliveries": 2_000}
CARRIED_ONCE = {("process_events", 1): 20_000, ("fire_timers", 1): 2_000, ("deliver", 1): 2_000}


def sweep_until_done(scheduler: Scheduler, now: datetime) -> None:
    """Sweep until a sweep finds nothing more to enqueue (a bounded sweep goes on where the last stopped)."""
    for _ in range(100):
        if scheduler.sweep(now) == 0:
            return
    raise AssertionError("the sweeps never ran out of work")


def test_a_backlog_waiting_in_redis_is_not_enqueued_again(redis_services):
    # Given a backlog enqueued on Redis, no worker taking it
    at = datetime.now(timezone.utc)
    build_backlog(redis_services, at, **BACKLOG)
    # When the scheduler sweeps, long after JOURNEY_SWEEP_AFTER
    sweep_until_done(Scheduler(redis_services), at + redis_services.settings.sweep_after + timedelta(hours=1))
    # Then every row is still carried by exactly one message: none was enqueued again
    assert times_carried(redis_services) == CARRIED_ONCE


def test_a_backlog_whose_redis_keys_were_deleted_is_enqueued_once(redis_services, redis_namespace):
    # Given the same backlog, its messages lost with their Redis keys
    at = datetime.now(timezone.utc)
    build_backlog(redis_services, at, **BACKLOG)
    client = redis_services.broker.client
    client.delete(*client.scan_iter(f"{redis_namespace}*"))
    # When the scheduler sweeps until it finds nothing more
    sweep_until_done(Scheduler(redis_services), at + redis_services.settings.sweep_after + timedelta(hours=1))
    # Then every row is carried by exactly one message again
    assert times_carried(redis_services) == CARRIED_ONCE


def test_the_scheduler_process_sweeps_lost_deliveries_and_leaves_queued_work_alone(pg_url, redis_namespace, engine_env):
    from tests.conftest import make_services

    services = make_services(pg_url, redis_url=REDIS_URL, namespace=redis_namespace)
    scheduler = None
    try:
        # Given a backlog on Redis, no worker taking it, whose delivery messages were lost
        build_backlog(services, datetime.now(timezone.utc), events=2_000, timers=500, deliveries=500)
        client = services.broker.client
        client.delete(*client.scan_iter(f"{redis_namespace}*:deliveries.*"))
        # When `journey scheduler` runs past JOURNEY_SWEEP_AFTER until the deliveries are carried again
        env = dict(engine_env, JOURNEY_SWEEP_AFTER="1s", JOURNEY_SWEEP_INTERVAL="1s")
        scheduler = spawn(["scheduler"], env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and scheduler.poll() is None:
            if sum(n for (actor, _), n in message_ids(services.broker).items() if actor == "deliver") >= 500:
                break
            time.sleep(0.3)
        stop(scheduler)
        # Then every row is carried by exactly one message: the lost ones again, the queued ones still
        assert times_carried(services) == {("process_events", 1): 2_000, ("fire_timers", 1): 500, ("deliver", 1): 500}
    finally:
        if scheduler is not None:
            stop(scheduler)
        services.close()
