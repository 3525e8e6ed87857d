"""Why not, on PostgreSQL through the API and the event worker: the customers a journey turned
away are counted in ``GET /v1/journeys/{id}/stats`` and the latest are in the customer's trace."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from engine import deploy
from engine.api import create_app
from engine.orchestrator import TURN_AWAYS_KEPT
from tests.conftest import create_key, drain

pytestmark = pytest.mark.integration

JOURNEY = """
id: big_carts
name: Big carts
stage: consideration
trigger: {event: checkout_started, when: event.properties.cart_value > 100}
sample: {events: {checkout_started: {properties: {cart_value: 120}}}}
steps:
  - id: pause
    wait: 30d
"""


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_turn_aways_are_counted_and_the_latest_kept_on_postgresql(pg_services, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "big_carts.yaml"
    path.write_text(JOURNEY)
    with pg_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], pg_services.clock())
    write, admin = _auth(create_key(pg_services)), _auth(create_key(pg_services, "ops", admin=True))
    small = [{"type": "track", "event": "checkout_started", "userId": "ada", "messageId": f"small-{i}",
              "properties": {"cart_value": i}} for i in range(TURN_AWAYS_KEPT + 5)]
    big = [{"type": "track", "event": "checkout_started", "userId": "bob", "messageId": f"big-{i}",
            "properties": {"cart_value": 150}} for i in range(2)]
    with TestClient(create_app(pg_services)) as client:
        for batch in (small, big):
            response = client.post("/v1/batch", json={"batch": batch}, headers=write)
            assert response.status_code == 200, response.text
            drain(pg_services)
        with pg_services.sessions.begin() as session:
            deploy.set_status(session, "big_carts", "paused", pg_services.clock())
        pg_services.deployed.invalidate()
        response = client.post("/v1/track", json={"event": "checkout_started", "userId": "cy", "messageId": "paused-1",
                                                  "properties": {"cart_value": 150}}, headers=write)
        assert response.status_code == 200, response.text
        drain(pg_services)
        stats = client.get("/v1/journeys/big_carts/stats", params={"since": "1d"}, headers=admin).json()
        trace = client.get("/v1/customers/ada/trace", headers=admin).json()
    kept = [t["value"]["event.properties.cart_value"] for t in trace["notEntered"]]
    assert (stats["not_entered"], kept) == (
        {"condition_false": TURN_AWAYS_KEPT + 5, "entry_limit": 1, "paused": 1}, list(range(5, TURN_AWAYS_KEPT + 5)))
