"""Losing Redis loses nothing: the scheduler's sweeper re-enqueues pending events."""

from __future__ import annotations

import time

import httpx
import pytest
import redis
from sqlalchemy import func, select

from engine.storage.models import Event
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
