"""journey replay: stored events through the deployed and the changed journeys, reading the database only."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError
from starlette.testclient import TestClient

from engine import deploy, ingest
from engine.api import create_app
from engine.cli import main
from engine.replay import read_only, replay, snapshot
from engine.storage.models import Base, Delivery
from engine.twin import VirtualClock, fast_forward, stub_channels
from tests.conftest import close_services, create_key, drain, make_services

ROOT = Path(__file__).parents[2]
CART = ROOT / "journeys" / "cart_abandonment.yaml"
#: Noon UTC three days ago: inside a 30d window, and clear of the cart journey's quiet hours.
T0 = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).replace(hour=12, minute=0, second=0, microsecond=0)


def checkout(user: str, order: str, at: dt.datetime) -> dict[str, object]:
    return {"type": "track", "event": "checkout_started", "userId": user, "timestamp": at.isoformat(),
            "properties": {"cart_value": 120.5, "order_id": order, "currency": "EUR", "item_count": 2}}


def identify(user: str, at: dt.datetime) -> dict[str, object]:
    return {"type": "identify", "userId": user, "timestamp": at.isoformat(),
            "traits": {"first_name": user.title(), "email": f"{user}@example.com"}}


def order(user: str, order_id: str, at: dt.datetime) -> dict[str, object]:
    return {"type": "track", "event": "order_completed", "userId": user, "timestamp": at.isoformat(),
            "properties": {"order_id": order_id, "total": 120.5}}


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of every table's rows."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: tuple(connection.execute(text(  # type: ignore[misc]
                    f"SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"
                )).one())
                for table in Base.metadata.tables
            }
    finally:
        engine.dispose()


def changed_cart(tmp_path: Path) -> Path:
    """The cart journey with its reminder two hours after the checkout instead of one."""
    folder = tmp_path / "changed"
    folder.mkdir()
    (folder / "templates").symlink_to(ROOT / "journeys" / "templates")
    source = CART.read_text(encoding="utf-8").replace("  - id: wait_1h\n    wait: 1h", "  - id: wait_1h\n    wait: 2h")
    assert "wait: 2h" in source
    path = folder / "cart_abandonment.yaml"
    path.write_text(source, encoding="utf-8")
    return path


def sent(summary: dict[str, object]) -> Counter[tuple[str, str, str]]:
    return Counter({(s["journey"], s["step"], s["channel"]): s["count"] for s in summary["sent"]})  # type: ignore[attr-defined,index]


def test_replay_finds_the_workers_sends_and_what_a_changed_journey_would_do(pg_url, tmp_path, monkeypatch):
    # Given the cart journey deployed, and two customers' events sent through the API
    # while the workers run on a clock that starts three days ago
    clock = VirtualClock(T0)
    services = make_services(pg_url)
    services.clock = clock
    services.adapters.update(stub_channels())
    try:
        with services.sessions.begin() as session:
            deploy.deploy(session, [deploy.snapshot(CART)], T0)
        auth = {"Authorization": "Basic " + base64.b64encode(f"{create_key(services)}:".encode()).decode()}
        with TestClient(create_app(services)) as client:

            def post(message: dict[str, object]) -> None:
                response = client.post(f"/v1/{message['type']}", json=message, headers=auth)
                assert response.status_code == 200, response.text
                drain(services)

            for user, number in (("ada", "o-1"), ("grace", "o-2")):
                post(identify(user, T0))
                post(checkout(user, number, T0))
            # grace orders 90 minutes on: after the 1h reminder, before a 2h one
            fast_forward(services, clock, T0 + dt.timedelta(minutes=90), lambda: drain(services))
            clock.current = T0 + dt.timedelta(minutes=90)
            post(order("grace", "o-2", clock.current))
            fast_forward(services, clock, T0 + dt.timedelta(days=2), lambda: drain(services))
        with services.sessions() as session:
            workers = Counter((d.journey_id, d.step, d.channel) for d in session.scalars(
                select(Delivery).where(Delivery.status == "sent")))
    finally:
        close_services(services)
    assert workers[("cart_abandonment", "reminder", "email")] == 2  # the test's premise
    before = fingerprint(pg_url)

    # When the stored history is replayed through a copy of the journey whose reminder waits 2h
    monkeypatch.setenv("DATABASE_URL", pg_url)
    result = CliRunner().invoke(main, ["replay", str(changed_cart(tmp_path)), "--since", "30d", "--json"])
    assert result.exit_code == 0, result.output

    # Then the deployed column has the workers' sends, and the changed one lacks grace's reminder
    report = json.loads(result.output)
    assert sent(report["deployed"]) == workers
    expected = workers.copy()
    expected[("cart_abandonment", "reminder", "email")] -= 1
    assert sent(report["changed"]) == +expected
    assert report["deployed"]["converted"] == report["changed"]["converted"] == {"cart_abandonment": 1}
    # and the database is as it was
    assert fingerprint(pg_url) == before


def test_the_table_marks_what_the_changed_journey_does_differently(pg_url, tmp_path, monkeypatch):
    services = make_services(pg_url)
    try:
        with services.sessions.begin() as session:
            deploy.deploy(session, [deploy.snapshot(CART)], T0)
            rows, _ = ingest.prepare({"batch": [identify("grace", T0), checkout("grace", "o-2", T0),
                                                order("grace", "o-2", T0 + dt.timedelta(minutes=90))]},
                                     source="test", received_at=T0, type_=None)
            ingest.store(session, rows)
    finally:
        close_services(services)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    result = CliRunner().invoke(main, ["replay", str(changed_cart(tmp_path)), "--since", "30d"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "sent cart_abandonment/reminder email" in line)
    assert line.split() == ["*", "sent", "cart_abandonment/reminder", "email", "1", "0"]


@pytest.mark.parametrize(("database", "refusal"), [("sqlite_url", "readonly"), ("pg_url", "read-only transaction")])
def test_replay_reads_through_a_connection_that_cannot_write(request, database, refusal):
    url = request.getfixturevalue(database)
    make_services(url).close()
    engine = read_only(url)
    try:
        with snapshot(engine) as connection, pytest.raises(DBAPIError, match=refusal):
            connection.execute(text("DELETE FROM events"))
    finally:
        engine.dispose()


# -- SQLite: the window and the read-only guarantee -----------------------------------------------


@pytest.mark.parametrize("parallel", [True, False], ids=["two processes", "one process"])
def test_only_the_window_is_replayed_and_the_file_is_left_as_it_was(sqlite_url, tmp_path, parallel):
    start, end = T0, T0 + dt.timedelta(days=1)
    services = make_services(sqlite_url)
    services.clock = VirtualClock(start)
    try:
        with services.sessions.begin() as session:
            deploy.deploy(session, [deploy.snapshot(CART)], start - dt.timedelta(days=1))
            batch = [identify("ada", start - dt.timedelta(hours=1)),  # before: part of the profile at the start
                     checkout("ada", "o-1", start - dt.timedelta(minutes=1)),  # before: not replayed
                     checkout("ada", "o-2", start + dt.timedelta(hours=2)),  # inside
                     checkout("bob", "o-3", end)]  # at the end: not replayed
            rows, _ = ingest.prepare({"batch": batch}, source="test", received_at=start, type_=None)
            ids = ingest.store(session, rows)
        services.enqueue_events(ids)
        drain(services)  # the workers built ada's profile
    finally:
        close_services(services)
    database = tmp_path / "journey.db"
    digest = hashlib.sha256(database.read_bytes()).hexdigest()

    outcome = replay(sqlite_url, [], start, end, directory=tmp_path / "versions", parallel=parallel)

    assert outcome.events == 1 and outcome.customers == 1
    # ada is known at the start with her email, so her one checkout in the window is reminded
    assert outcome.deployed.sent[("cart_abandonment", "reminder", "email")] == 1
    assert outcome.changed.rows() == {}
    # the file is unchanged; a reader of a WAL database may create an empty -wal (no page written)
    assert hashlib.sha256(database.read_bytes()).hexdigest() == digest
    wal = tmp_path / "journey.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0

