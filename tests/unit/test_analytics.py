"""Journey stats, the stage funnel and the journeys list on the twin (SQLite), through the API and the CLI.

Given 60 customers who sign up (every third on the pro plan), a journey that sends pro
customers one way and splits the others 50/50, and orders from some of them, the stats
count every step, edge and variant as the truth says, the CLI's ``--json`` is the API's
JSON, and bad parameters get a 400 that names them.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

from engine import deploy
from engine.api import create_app
from engine.cli import main
from engine.storage.models import Enrollment
from tests.conftest import create_key, drain
from tests.unit.test_journeys_e2e import Recorder

JOURNEY = """
id: trial
name: Trial
stage: consideration
trigger: {event: signed_up}
goal: {event: order_completed}
policy: {kind: transactional}
sample:
  events:
    signed_up: {properties: {plan: free}}
steps:
  - id: check
    branch:
      - when: event.properties.plan == "pro"
        goto: vip
      - else: pick
  - id: vip
    send: {channel: log, text: "welcome, pro"}
    goto: wait_order
  - id: pick
    split:
      - {name: a, weight: 50, goto: offer_a}
      - {name: b, weight: 50, goto: offer_b}
  - id: offer_a
    send: {channel: log, text: "offer a"}
    goto: wait_order
  - id: offer_b
    send: {channel: log, text: "offer b"}
  - id: wait_order
    update: {stage: purchase}
  - id: hold
    wait: 7d
"""

USERS = [f"u{i:02d}" for i in range(60)]


@pytest.fixture
def engine(services, tmp_path: Path, sqlite_url: str, monkeypatch):  # type: ignore[no-untyped-def]
    services.adapters["log"] = Recorder()
    path = tmp_path / "trial.yaml"
    path.write_text(JOURNEY)
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], services.clock())
    write, admin = create_key(services), create_key(services, "ops", admin=True)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with TestClient(create_app(services)) as client:
        batch = [{"type": "track", "event": "signed_up", "userId": u, "messageId": f"s-{u}",
                  "properties": {"plan": "pro" if i % 3 == 0 else "free"}} for i, u in enumerate(USERS)]
        assert client.post("/v1/batch", json={"batch": batch}, headers=_auth(write)).status_code == 200
        drain(services)
        yield services, client, _auth(write), _auth(admin)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _variants(services) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with services.sessions() as session:
        states = session.execute(select(Enrollment.state)).scalars().all()
    return {s["trigger"]["userId"]: s["variant"].get("pick", "vip") for s in states}


def test_steps_edges_and_variants_equal_the_truth(engine):
    services, client, write, admin = engine
    variant = _variants(services)
    buyers = [u for u in USERS if variant[u] == "a"][:6] + [u for u in USERS if variant[u] == "b"][:2]
    orders = [{"type": "track", "event": "order_completed", "userId": u, "messageId": f"o-{u}"} for u in buyers]
    assert client.post("/v1/batch", json={"batch": orders}, headers=write).status_code == 200
    drain(services)

    stats = client.get("/v1/journeys/trial/stats", params={"since": "1h", "min_sample": "5"}, headers=admin).json()

    count = Counter(variant.values())
    waiting = len(USERS) - len(buyers)
    assert {
        "entered": stats["entered"],
        "converted": stats["converted"],
        "steps": {s["id"]: (s["entered"], s["waiting"], s["exited"], s["deliveries"]) for s in stats["steps"]},
        "edges": {(e["step"], e["path"], e["to"]): e["customers"] for e in stats["edges"]},
        "variants": {v["variant"]: (v["customers"], v["converted"], v["control"]) for v in stats["variants"]},
    } == {
        "entered": 60,
        "converted": len(buyers),
        "steps": {
            "check": (60, 0, {}, {}),
            "vip": (20, 0, {}, {"sent": 20}),
            "pick": (40, 0, {}, {}),
            "offer_a": (count["a"], 0, {}, {"sent": count["a"]}),
            "offer_b": (count["b"], 0, {}, {"sent": count["b"]}),
            "wait_order": (60, 0, {}, {}),
            "hold": (60, waiting, {"goal:order_completed": len(buyers)}, {}),
        },
        "edges": {
            ("check", 'event.properties.plan == "pro"', "vip"): 20,
            ("check", "else", "pick"): 40,
            ("pick", "a", "offer_a"): count["a"],
            ("pick", "b", "offer_b"): count["b"],
        },
        "variants": {"a": (count["a"], 6, True), "b": (count["b"], 2, False)},
    }


def test_the_cli_prints_the_apis_json_and_a_table(engine):
    services, client, _write, admin = engine
    api = client.get("/v1/journeys/trial/stats", params={"since": "30d"}, headers=admin).json()
    runner = CliRunner()
    as_json = runner.invoke(main, ["stats", "trial", "--json"], catch_exceptions=False)
    table = runner.invoke(main, ["stats", "trial"], catch_exceptions=False)
    cli = json.loads(as_json.stdout)
    # The two ran at different moments: the window's ends and the waits' ages differ, nothing else.
    for stats in (api, cli):
        stats.pop("since"), stats.pop("until")
        for step in stats["steps"]:
            step.pop("wait")
    assert (as_json.exit_code, cli, table.exit_code, "offer_a" in table.stdout, "VARIANT" in table.stdout) == (
        0, api, 0, True, True)


def test_the_stage_funnel_counts_customers_and_moves(engine):
    _services, client, _write, admin = engine
    funnel = client.get("/v1/stages/funnel", params={"since": "1h"}, headers=admin).json()
    stages = {s["stage"]: (s["customers"], s["entered"], s["advanced"]) for s in funnel["stages"]}
    moves = {(t["from"], t["to"]): t["customers"] for t in funnel["transitions"]}
    assert (stages["consideration"], stages["purchase"], moves) == (
        (0, 60, 60), (60, 60, 0), {(None, "consideration"): 60, ("consideration", "purchase"): 60})


def test_the_journeys_list_names_versions_and_status(engine):
    _services, client, _write, admin = engine
    listing = client.get("/v1/journeys", headers=admin).json()["journeys"]
    assert [(j["id"], j["status"], j["version"], [v["version"] for v in j["versions"]], j["active"]) for j in listing] == [
        ("trial", "active", 1, [1], 60)]


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "yesterday"}, "since"),
    ({"since": "1h", "until": "2h"}, "since"),
    ({"version": "two"}, "version"),
    ({"window": "a week"}, "window"),
    ({"min_sample": "0"}, "min_sample"),
])
def test_bad_parameters_are_a_400_naming_the_field(engine, params, field):
    _services, client, _write, admin = engine
    response = client.get("/v1/journeys/trial/stats", params=params, headers=admin)
    assert (response.status_code, [e["path"] for e in response.json()["errors"]]) == (400, [field])


def test_an_unknown_journey_or_version_is_a_404(engine):
    _services, client, _write, admin = engine
    codes = [client.get(f"/v1/journeys/{j}/stats", params=p, headers=admin).status_code
             for j, p in (("nope", {}), ("trial", {"version": "9"}))]
    assert codes == [404, 404]


def test_stats_are_not_for_write_keys(engine):
    _services, client, write, _admin = engine
    assert [client.get(path, headers=write).status_code for path in
            ("/v1/journeys", "/v1/journeys/trial/stats", "/v1/stages/funnel")] == [403, 403, 403]


def test_the_metrics_carry_the_variant(engine):
    _services, client, _write, admin = engine
    body = client.get("/metrics", headers=admin).text
    variant = _variants(_services)
    count = Counter(variant.values())
    assert f'journey_variant_enrollments{{journey="trial",split="pick",status="active",variant="a"}} {count["a"]}.0' in body


AGAIN = """
id: again
name: Again
stage: consideration
trigger: {event: visited}
entry: {reentry: always}
goal: {event: order_completed}
policy: {kind: transactional}
steps:
  - id: pick
    split:
      - {name: a, weight: 50, goto: offer_a}
      - {name: b, weight: 50, goto: offer_b}
  - id: offer_a
    send: {channel: log, text: "offer a"}
  - id: offer_b
    send: {channel: log, text: "offer b"}
"""


def test_customers_who_re_enter_are_counted_once_per_variant(engine, tmp_path: Path):
    services, client, write, admin = engine
    path = tmp_path / "again.yaml"
    path.write_text(AGAIN)
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], services.clock())
    services.deployed.invalidate()
    users = USERS[:30]
    visits = [{"type": "track", "event": "visited", "userId": u, "messageId": f"v{n}-{u}"} for n in (1, 2) for u in users]
    assert client.post("/v1/batch", json={"batch": visits}, headers=write).status_code == 200
    drain(services)
    stats = client.get("/v1/journeys/again/stats", params={"since": "1h"}, headers=admin).json()
    assert (stats["entered"], stats["customers"], sum(v["customers"] for v in stats["variants"]),
            {s["id"]: s["entered"] for s in stats["steps"]}["pick"]) == (60, 30, 30, 60)
