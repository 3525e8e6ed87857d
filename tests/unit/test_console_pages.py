"""The console's pages on SQLite: each one renders what the engine's functions say, the actions
call the same functions as the admin API (audited with the console user's key), and bad input
is a clear message on the page, never a 500."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from starlette.testclient import TestClient

from engine import deploy
from engine.cli import main
from engine.services import Services
from engine.storage.models import ApiKey, AuditEntry, Delivery, Event, JourneyRecord, TraceEntry
from tests.conftest import create_key, drain
from tests.unit.console_helpers import client_for, hooks, sign_in
from tests.unit.test_analytics import JOURNEY as SPLIT_JOURNEY
from tests.unit.test_analytics import USERS, _auth, _variants
from tests.unit.test_journeys_e2e import Recorder
from tests.unit.test_operator_actions import deliveries_in, failed_events
from tests.unit.test_policy import make_world

PAGES = {"/console": "overview", "/console/deliveries": "deliveries", "/console/events": "failed-events",
         "/console/journeys": "journeys", "/console/journeys/nps_survey": "journey", "/console/customers?q=ada": "customer",
         "/console/experiments": "experiments", "/console/audit": "audit"}


@pytest.fixture
def world(services: Services) -> tuple[Services, int]:
    services, customer_id, _ = make_world(services, "UTC")
    return services, customer_id


@pytest.fixture
def admin(world: tuple[Services, int]) -> tuple[TestClient, str, str]:
    """A client signed in with an admin key: the client, its CSRF token, the key as the audit log names it."""
    services, _ = world
    key = create_key(services, "ops", admin=True)
    client = client_for(services)
    csrf = sign_in(client, key)
    with services.sessions() as session:
        row = session.execute(select(ApiKey).where(ApiKey.name == "ops")).scalar_one()
        actor = f"key {row.id} {row.prefix}… (ops)"
    return client, csrf, actor


def ids_on(page: str, hook: str) -> list[int]:
    return [int(re.search(r'data-id="(\d+)"', tag).group(1)) for tag in hooks(page, hook)]  # type: ignore[union-attr]


def audit_rows(services: Services) -> list[tuple[Any, ...]]:
    with services.sessions() as session:
        return [(a.actor, a.action, a.selection, a.acted) for a in session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()]


def test_every_page_renders(world: tuple[Services, int], admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    [dead] = deliveries_in(services, customer_id, "dead")
    failed_events(services, 1)
    client, _, _ = admin
    for path, name in {**PAGES, f"/console/deliveries/{dead}": "delivery"}.items():
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert f'data-page="{name}"' in page.text, path
        assert 'data-test="nav-deliveries"' in page.text


def test_the_overview_shows_queues_the_sends_per_minute_and_the_backlog(world: tuple[Services, int],
                                                                     admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    ids = deliveries_in(services, customer_id, "sent", 3, error=None)
    now = services.clock()
    with services.sessions.begin() as session:
        for minutes, delivery_id in zip((2, 2, 70), ids, strict=True):  # the third is older than an hour
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(sent_at=now - timedelta(minutes=minutes)))
    deliveries_in(services, customer_id, "pending", 2, error=None, attempts=0)
    services.enqueue_events([])  # nothing: the queues are declared all the same
    client, _, _ = admin
    page = client.get("/console").text
    bars = [int(c) for c in re.findall(r'data-test="chart-bar" data-count="(\d+)"', page)]
    assert len(bars) == 60 and sum(bars) == 2 and max(bars) == 2
    assert re.search(r'data-test="backlog-row" data-status="pending"><td><a [^>]*>pending</a></td><td class="num">2<', page)
    assert hooks(page, "queue-row")
    assert 'data-test="oldest-delivery">' in page and 'data-test="scheduler-lag">none<' in page


def test_deliveries_filter_and_page_by_keyset(world: tuple[Services, int], admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    dead = deliveries_in(services, customer_id, "dead", 3)
    deliveries_in(services, customer_id, "sent", 2, error=None)
    held = deliveries_in(services, customer_id, "held", 1, error="quiet hours (21:00-08:00 UTC)")
    client, _, _ = admin
    assert ids_on(client.get("/console/deliveries?status=dead").text, "delivery-row") == dead
    assert ids_on(client.get("/console/deliveries?status=held&reason=QUIET").text, "delivery-row") == held
    first = client.get("/console/deliveries", params={"status": "dead", "limit": "2", "channel": ""}).text
    assert ids_on(first, "delivery-row") == dead[:2]
    link = re.search(r'href="([^"]+)" data-test="next-page"', first).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    second = client.get(link).text
    assert ids_on(second, "delivery-row") == dead[2:] and 'data-test="next-page"' not in second
    assert all('data-status="dead"' in tag for tag in hooks(second, "delivery-row"))


@pytest.mark.parametrize("query, says", [
    ("status=bogus", "status: Input should be"),
    ("cursor=zz", "cursor: &#39;zz&#39; is not a cursor"),
    ("since=yesterday", "since:"),
    ("since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z", "must be before until"),
    ("limit=0", "limit:"),
    ("colour=red", "colour"),
])
def test_a_bad_filter_is_a_message_on_the_page(admin: tuple[TestClient, str, str], query: str, says: str) -> None:
    client, _, _ = admin
    page = client.get(f"/console/deliveries?{query}")
    if query == "colour=red":  # a parameter the page does not know is left out, as the filter form never sends it
        assert page.status_code == 200
        return
    assert page.status_code == 400 and 'data-test="problems"' in page.text and says in page.text
    assert 'data-test="filter"' in page.text  # the form stays, to fix it


@pytest.mark.parametrize("path, status, says", [
    ("/console/deliveries/abc", 400, "is not a delivery id"),
    ("/console/deliveries/99999", 404, "no delivery has the id 99999"),
    ("/console/deliveries/99999999999999999999999", 400, "is not a delivery id"),
    ("/console/journeys/nope", 404, "no deployed journey has the id"),
    ("/console/journeys/nps_survey?since=soon", 400, "since:"),
    ("/console/events?status=applied", 400, "status:"),
    ("/console/audit?cursor=-1", 400, "cursor:"),
    ("/console/experiments?since=forever", 400, "since:"),
    ("/console/experiments?min_sample=1", 400, "min_sample:"),
    ("/console/customers?q=nobody", 404, "no customer is known by the user id or anonymous id"),
    ("/console/nowhere", 404, "no page /console/nowhere"),
])
def test_unknown_ids_and_bad_values_are_pages_that_say_so(admin: tuple[TestClient, str, str], path: str, status: int,
                                                          says: str) -> None:
    client, _, _ = admin
    page = client.get(path)
    assert (page.status_code, says in page.text) == (status, True), page.text[-1500:]


def test_retry_by_ticked_rows_calls_the_engine_and_is_audited_with_the_key(world: tuple[Services, int],
                                                                          admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    dead = deliveries_in(services, customer_id, "dead", 3)
    client, csrf, actor = admin
    page = client.get("/console/deliveries?status=dead").text
    assert [t for t in hooks(page, "act-selected") if 'data-action="retry"' in t]
    done = client.post("/console/deliveries/retry", data={"csrf": csrf, "scope": "ids", "ids": [str(i) for i in dead[:2]],
                                                          "filter": "status=dead", "back": "/console/deliveries?status=dead"})
    assert done.status_code == 303 and done.headers["location"].startswith("/console/deliveries?status=dead&done=")
    shown = client.get(done.headers["location"]).text
    assert ids_on(shown, "delivery-row") == dead[2:]
    assert re.search(r'data-test="notice"[^>]*>Done: deliveries.retry on 2 rows by key \d+ je_admin_', shown)
    assert audit_rows(services) == [(actor, "deliveries.retry", {"ids": dead[:2]}, 2)]
    with services.sessions() as session:
        assert [d.status for d in session.execute(select(Delivery).where(Delivery.id.in_(dead)).order_by(Delivery.id)).scalars()] \
            == ["pending", "pending", "dead"]
        notes = session.execute(select(TraceEntry.detail).where(TraceEntry.what == "delivery retried")).scalars().all()
    assert notes and all("by console, key ops" in n for n in notes)


def test_one_rows_button_acts_on_that_row_only(world: tuple[Services, int], admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    unknown = deliveries_in(services, customer_id, "unknown", 2)
    client, csrf, actor = admin
    page = client.get("/console/deliveries").text
    row_buttons = {re.search(r'data-action="([^"]+)"', t).group(1) for t in hooks(page, "row-action")}  # type: ignore[union-attr]
    assert row_buttons == {"drop", "resend", "mark-sent"}  # what applies to unknown deliveries
    assert ">Mark sent</button>" in page and ">Resend</button>" in page
    client.post("/console/deliveries/mark-sent", data={"csrf": csrf, "only": str(unknown[1]), "ids": str(unknown[0])})
    with services.sessions() as session:
        assert session.get(Delivery, unknown[0]).status == "unknown"  # type: ignore[union-attr]
        assert session.get(Delivery, unknown[1]).status == "sent"  # type: ignore[union-attr]
    assert audit_rows(services) == [(actor, "deliveries.mark-sent", {"ids": [unknown[1]]}, 1)]


def test_an_action_on_the_filter_asks_to_confirm_with_the_count_then_acts(world: tuple[Services, int],
                                                                         admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    dead = deliveries_in(services, customer_id, "dead", 4)
    deliveries_in(services, customer_id, "sent", 2, error=None)
    client, csrf, actor = admin
    form = {"csrf": csrf, "scope": "filter", "filter": "channel=email", "back": "/console/deliveries?channel=email"}
    ask = client.post("/console/deliveries/drop", data=form)
    assert ask.status_code == 200 and 'data-test="confirm-count" data-count="4"' in ask.text
    assert "Confirm</button>" in ask.text and audit_rows(services) == []
    done = client.post("/console/deliveries/drop", data={**form, "confirmed": "yes"})
    assert done.status_code == 303
    assert audit_rows(services) == [(actor, "deliveries.drop", {"filter": {"channel": "email"}}, 4)]
    with services.sessions() as session:
        assert {d.dropped_by for d in session.execute(select(Delivery).where(Delivery.id.in_(dead))).scalars()} == {actor}


def test_a_refused_action_says_why_and_changes_nothing(world: tuple[Services, int], admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    [sent] = deliveries_in(services, customer_id, "sent", error=None)
    client, csrf, _ = admin
    refused = client.post("/console/deliveries/retry", data={"csrf": csrf, "only": str(sent)})
    assert refused.status_code == 409 and f"delivery {sent} is sent; only dead or failed deliveries can be retried" in refused.text
    missing = client.post("/console/deliveries/retry", data={"csrf": csrf, "only": "424242"})
    assert missing.status_code == 404 and "no delivery has the id 424242" in missing.text
    for form, says in (({}, "Tick at least one delivery"), ({"only": "x"}, "is not a delivery id"),
                       ({"scope": "filter", "filter": "status=sent"}, 'data-count="0"'),
                       ({"scope": "filter", "filter": "status=nope"}, "status: Input should be")):
        answer = client.post("/console/deliveries/retry", data={"csrf": csrf, **form})
        assert says in answer.text and answer.status_code < 500, form
    too_many = client.post("/console/deliveries/retry", data={"csrf": csrf, "ids": [str(i) for i in range(1, 1002)]})
    assert too_many.status_code == 400 and "ids: List should have at most 1000 items" in too_many.text
    huge = client.post("/console/deliveries/retry", data={"csrf": csrf, "filter": "reason=" + "x" * 300_000})
    assert huge.status_code == 413 and "at most 262144" in huge.text
    assert client.post("/console/deliveries/explode", data={"csrf": csrf}).status_code == 404
    assert audit_rows(services) == []


def test_the_delivery_page_shows_attempts_errors_content_and_trace(world: tuple[Services, int],
                                                                  admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    [dead] = deliveries_in(services, customer_id, "dead", error="smtp: 550 mailbox unavailable", attempts=5)
    with services.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id == dead).values(rendered={"subject": "How did we do?"}))
        session.add(TraceEntry(enrollment_id="e-1", at=services.clock(), step="survey", what="delivery dead",
                               detail="email nps_survey", value={"delivery": dead, "attempt": 5}, error="smtp: 550"))
    client, _, _ = admin
    page = client.get(f"/console/deliveries/{dead}").text
    assert 'data-test="attempts">5<' in page and "smtp: 550 mailbox unavailable" in page
    assert "How did we do?" in page and len(hooks(page, "trace-line")) == 1
    assert [t for t in hooks(page, "row-action") if 'data-action="retry"' in t]


def test_failed_events_retry_and_drop_through_the_engine(world: tuple[Services, int], admin: tuple[TestClient, str, str]) -> None:
    services, _ = world
    ids = failed_events(services, 3)
    client, csrf, actor = admin
    page = client.get("/console/events").text
    assert ids_on(page, "event-row") == ids and "the database was away" in page
    client.post("/console/events/drop", data={"csrf": csrf, "only": str(ids[0])})
    ask = client.post("/console/events/retry", data={"csrf": csrf, "scope": "filter", "filter": "name=order_completed"})
    assert 'data-count="2"' in ask.text
    client.post("/console/events/retry", data={"csrf": csrf, "scope": "filter", "filter": "name=order_completed",
                                               "confirmed": "yes"})
    assert audit_rows(services) == [(actor, "events.drop", {"ids": [ids[0]]}, 1),
                                    (actor, "events.retry", {"filter": {"name": "order_completed"}}, 2)]
    with services.sessions() as session:
        assert session.get(Event, ids[0]).dropped_by == actor  # type: ignore[union-attr]


def test_a_journey_is_paused_and_resumed_after_a_confirmation_and_audited(world: tuple[Services, int],
                                                                         admin: tuple[TestClient, str, str]) -> None:
    services, _ = world
    client, csrf, actor = admin
    page = client.get("/console/journeys/nps_survey").text
    assert {re.search(r'data-action="(\w+)"', t).group(1) for t in hooks(page, "journey-action")} == {"pause", "archive"}  # type: ignore[union-attr]
    ask = client.post("/console/journeys/nps_survey/pause", data={"csrf": csrf})
    assert ask.status_code == 200 and "Confirm</button>" in ask.text and "will be <strong>paused</strong>" in ask.text
    with services.sessions() as session:
        assert session.get(JourneyRecord, "nps_survey").status == "active"  # type: ignore[union-attr]
    done = client.post("/console/journeys/nps_survey/pause", data={"csrf": csrf, "confirmed": "yes"})
    assert done.status_code == 303
    page = client.get(done.headers["location"]).text
    assert 'data-status="paused"' in page and "Done: journeys.pause on 1 row" in page
    client.post("/console/journeys/nps_survey/resume", data={"csrf": csrf, "confirmed": "yes"})
    assert audit_rows(services) == [(actor, "journeys.pause", {"journey": "nps_survey"}, 1),
                                    (actor, "journeys.resume", {"journey": "nps_survey"}, 1)]
    assert client.post("/console/journeys/nope/pause", data={"csrf": csrf, "confirmed": "yes"}).status_code == 404
    assert client.post("/console/journeys/nps_survey/delete", data={"csrf": csrf}).status_code == 404
    listed = client.get("/console/journeys").text
    assert 'data-test="journey-row" data-id="nps_survey" data-status="active"' in listed


def test_the_api_and_the_cli_pause_resume_and_archive_audited(world: tuple[Services, int], sqlite_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    services, _ = world
    client = client_for(services)
    admin_key, read_key = create_key(services, "ops", admin=True), create_key(services, "auditor", scope="read")
    answer = client.post("/v1/journeys/nps_survey/pause", headers=_auth(admin_key))
    assert answer.status_code == 200 and answer.json()["status"] == "paused" and answer.json()["auditId"] >= 1
    assert client.post("/v1/journeys/nps_survey/archive", headers=_auth(read_key)).status_code == 403
    assert client.post("/v1/journeys/nope/resume", headers=_auth(admin_key)).status_code == 404
    assert client.post("/v1/journeys/nps_survey/resume").status_code == 401
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    result = CliRunner().invoke(main, ["archive", "nps_survey"], catch_exceptions=False)
    assert result.exit_code == 0 and "nps_survey: archived" in result.output
    actions = [(row[1], row[2]) for row in audit_rows(services)]
    assert actions == [("journeys.pause", {"journey": "nps_survey"}), ("journeys.archive", {"journey": "nps_survey"})]
    assert audit_rows(services)[1][0].startswith("cli:")
    documented = client.get("/openapi.json").json()["paths"]
    assert {"/v1/journeys/{journey_id}/pause", "/v1/journeys/{journey_id}/resume", "/v1/journeys/{journey_id}/archive"} <= set(documented)


def test_the_customer_page_shows_profile_enrollments_deliveries_and_trace(world: tuple[Services, int],
                                                                        admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    [held] = deliveries_in(services, customer_id, "held", error="quiet hours")
    client, _, _ = admin
    page = client.get("/console/customers", params={"q": "ada"}).text
    assert 'data-test="user-id">ada<' in page and "Ada@Example.com" in page
    assert 'data-test="enrollment" data-journey="nps_survey" data-status="active"' in page
    assert f'data-test="enrollment-delivery" data-id="{held}" data-status="held"' in page and "quiet hours" in page
    assert 'data-test="trace-text"' in page


def test_experiments_show_each_variant_as_journey_stats_counts_it(services: Services, tmp_path: Path) -> None:
    services.adapters["log"] = Recorder()
    path = tmp_path / "trial.yaml"
    path.write_text(SPLIT_JOURNEY)
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], services.clock())
    write, admin_key = create_key(services), create_key(services, "ops", admin=True)
    client = client_for(services)
    batch = [{"type": "track", "event": "signed_up", "userId": u, "messageId": f"s-{u}", "properties": {"plan": "free"}}
             for u in USERS[:20]]
    assert client.post("/v1/batch", json={"batch": batch}, headers=_auth(write)).status_code == 200
    drain(services)
    count = Counter(_variants(services).values())
    sign_in(client, admin_key)
    page = client.get("/console/experiments").text
    assert 'data-test="experiment" data-journey="trial"' in page and 'data-split="pick"' in page
    for variant in ("a", "b"):
        row = page[page.index(f'data-test="variant-row" data-variant="{variant}"'):]
        assert f'data-test="customers">{count[variant]}<' in row[:600]
    assert "not enough data" in page
    funnel = client.get("/console/journeys/trial").text
    bars = dict(re.findall(r'data-test="funnel-bar" data-step="(\w+)" data-count="(\d+)"', funnel))
    assert bars["check"] == "20" and int(bars["offer_a"]) == count["a"]


def test_the_audit_page_lists_actions_newest_first_and_pages(world: tuple[Services, int], admin: tuple[TestClient, str, str]) -> None:
    services, customer_id = world
    dead = deliveries_in(services, customer_id, "dead", 3)
    client, csrf, actor = admin
    for delivery_id in dead:
        client.post("/console/deliveries/drop", data={"csrf": csrf, "only": str(delivery_id)})
    first = client.get("/console/audit?limit=2").text
    ids = ids_on(first, "audit-row")
    assert len(ids) == 2 and ids == sorted(ids, reverse=True) and actor in first
    link = re.search(r'href="([^"]+)" data-test="next-page"', first).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert len(ids_on(client.get(link).text, "audit-row")) == 1
