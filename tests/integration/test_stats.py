"""Journey stats on PostgreSQL equal the truth of a known population enrolled through the API.

Given 1,500 customers who sign up through the HTTP API into a journey that splits them
45/45 with a 10% holdout, when variant ``a`` converts 30% of its customers, ``b`` 10% and the
holdout 10% (after its enrollments ended at once), then the stats count every step and
variant exactly, ``a`` beats the control with p < 0.05, and ``b`` (the same rate as the
control) is not significant.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from engine import deploy
from engine.api import create_app
from engine.storage.models import Enrollment
from tests.conftest import create_key, drain
from tests.unit.test_journeys_e2e import Recorder

pytestmark = pytest.mark.integration

JOURNEY = """
id: experiment
name: Offer experiment
stage: consideration
trigger: {event: signed_up}
goal: {event: order_completed}
policy: {kind: transactional}
steps:
  - id: pick
    split:
      - {name: a, weight: 45, goto: offer_a}
      - {name: b, weight: 45, goto: offer_b}
      - {holdout: 10}
  - id: offer_a
    send: {channel: log, text: "15% off"}
    goto: wait_order
  - id: offer_b
    send: {channel: log, text: "free shipping"}
  - id: wait_order
    wait: 7d
"""

POPULATION = 1500
RATES = {"a": 0.30, "b": 0.10, "control": 0.10}


@pytest.fixture
def engine(pg_services, tmp_path: Path):  # type: ignore[no-untyped-def]
    pg_services.adapters["log"] = Recorder()
    path = tmp_path / "experiment.yaml"
    path.write_text(JOURNEY)
    with pg_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], pg_services.clock())
    write = create_key(pg_services)
    admin = create_key(pg_services, "ops", admin=True)
    with TestClient(create_app(pg_services)) as client:
        yield pg_services, client, _auth(write), _auth(admin)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _post_batch(client: TestClient, auth: dict[str, str], messages: list[dict[str, object]]) -> None:
    for start in range(0, len(messages), 250):
        response = client.post("/v1/batch", json={"batch": messages[start:start + 250]}, headers=auth)
        assert response.status_code == 200, response.text


def test_stats_equal_the_truth_of_a_known_population(engine) -> None:  # type: ignore[no-untyped-def]
    services, client, write, admin = engine
    users = [f"user-{i:04d}" for i in range(POPULATION)]
    _post_batch(client, write, [{"type": "track", "event": "signed_up", "userId": u, "messageId": f"s-{u}"} for u in users])
    drain(services)

    # The truth: who was put in which variant (read from the enrollments' own state).
    with services.sessions() as session:
        rows = session.execute(select(Enrollment.state)).scalars().all()
    variant_of = {row["trigger"]["userId"]: row["variant"]["pick"] for row in rows}
    groups: dict[str, list[str]] = defaultdict(list)
    for user in users:
        groups[variant_of[user]].append(user)
    buyers = {name: members[: round(len(members) * RATES[name])] for name, members in groups.items()}
    orders = [{"type": "track", "event": "order_completed", "userId": u, "messageId": f"o-{u}"}
              for members in buyers.values() for u in members]
    _post_batch(client, write, orders)
    drain(services)

    response = client.get("/v1/journeys/experiment/stats", params={"since": "1d"}, headers=admin)
    assert response.status_code == 200, response.text
    stats = response.json()

    a, b, control = (len(groups[n]) for n in ("a", "b", "control"))
    bought = {n: len(m) for n, m in buyers.items()}
    treated = a + b
    steps = {s["id"]: s for s in stats["steps"]}
    variants = {v["variant"]: v for v in stats["variants"]}
    observed = {
        "entered": stats["entered"],
        "converted": stats["converted"],
        "steps": {i: (s["entered"], s["waiting"], s["exited"], sum(s["deliveries"].values())) for i, s in steps.items()},
        "variants": {n: (v["customers"], v["converted"]) for n, v in variants.items()},
        "a beats control": (variants["a"]["lift"] > 0, variants["a"]["p_value"] < 0.05, variants["a"]["significant"]),
        "b vs control": (variants["b"]["p_value"] > 0.05, variants["b"]["significant"]),
        "not_entered": stats["not_entered"],
    }
    assert observed == {
        "entered": POPULATION,
        "converted": sum(bought.values()),
        "steps": {
            "pick": (POPULATION, 0, {"holdout": control}, 0),
            "offer_a": (a, 0, {}, a),
            "offer_b": (b, 0, {}, b),
            "wait_order": (treated, treated - bought["a"] - bought["b"],
                           {"goal:order_completed": bought["a"] + bought["b"]}, 0),
        },
        "variants": {"a": (a, bought["a"]), "b": (b, bought["b"]), "holdout": (control, bought["control"])},
        "a beats control": (True, True, True),
        "b vs control": (True, False),
        "not_entered": {},
    }
