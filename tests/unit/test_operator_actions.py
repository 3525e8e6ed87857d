"""Operator actions on SQLite: ``journey deliveries``, ``journey events``, ``journey audit``, their
admin API twins, refusals with their reasons, batches, the audit log and read keys."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update
from starlette.testclient import TestClient

from engine import actions
from engine.api import create_app
from engine.cli import main
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND, RET_USAGE
from engine.orchestrator import MAX_EVENT_ATTEMPTS
from engine.services import Services
from engine.storage.models import ApiKey, AuditEntry, Delivery, Event, TraceEntry
from tests.conftest import create_key, drain
from tests.unit.test_api_suppressions import basic
from tests.unit.test_policy import NOON, add_deliveries, make_world

Run = Callable[..., Result]
ME = f"cli:{getpass.getuser()}"


@pytest.fixture
def world(any_services: Services):  # type: ignore[no-untyped-def]
    return make_world(any_services, "UTC")


@pytest.fixture
def run(any_services: Services, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Run:
    url = request.getfixturevalue("sqlite_url" if any_services.engine.dialect.name == "sqlite" else "pg_url")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def deliveries_in(services: Services, customer_id: int, status: str, n: int = 1, *, channel: str = "email",
                  error: str | None = "smtp: connection refused", attempts: int = 5, kind: str = "marketing") -> list[int]:
    ids = add_deliveries(services, customer_id, n, kind=kind)
    with services.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(
            status=status, error=error, attempts=attempts, channel=channel))
    return ids


def rows(services: Services, ids: list[int]) -> list[Delivery]:
    with services.sessions() as session:
        found = {d.id: d for d in session.execute(select(Delivery).where(Delivery.id.in_(ids))).scalars()}
        for d in found.values():
            session.expunge(d)
    return [found[i] for i in ids]


def audit_rows(services: Services) -> list[tuple[Any, ...]]:
    with services.sessions() as session:
        return [(a.actor, a.action, a.selection, a.acted, a.finished_at is not None)
                for a in session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()]


def failed_events(services: Services, n: int, *, attempts: int = MAX_EVENT_ATTEMPTS, name: str = "order_completed",
                  applied: bool = False) -> list[int]:
    with services.sessions.begin() as session:
        events = [Event(source="shop", message_id=f"m-{name}-{attempts}-{i}-{applied}", type="track", event=name,
                        user_id="ada", timestamp=NOON, received_at=NOON, attempts=attempts,
                        error=None if not attempts else "RuntimeError: the database was away",
                        processed_at=NOON if applied else None)
                  for i in range(n)]
        session.add_all(events)
        session.flush()
        return [e.id for e in events]


# Deliveries: retry


def test_retry_makes_a_dead_delivery_pending_with_its_attempts_from_zero_and_traces_them(world, run: Run):
    services, customer_id, _ = world
    [dead] = deliveries_in(services, customer_id, "dead")
    done = run("deliveries", "retry", str(dead))
    [row] = rows(services, [dead])
    with services.sessions() as session:
        trace = session.execute(select(TraceEntry.detail).where(TraceEntry.what == "delivery retried")).scalar_one()
    assert (done.stdout, row.status, row.attempts, row.error, trace) == (
        f"retried 1 delivery: {dead}\n", "pending", 0, None,
        f"email nps_survey (by command line ({getpass.getuser()}), after 5 attempts)")


def test_a_retried_delivery_is_sent_and_reads_sent(world):
    services, customer_id, stub = world
    # Transactional: the journey's quiet hours (21:00-08:00 in the customer's zone) would
    # defer a marketing send made on the wall clock at night.
    [dead] = deliveries_in(services, customer_id, "dead", kind="transactional")
    admin = basic(create_key(services, "ops", admin=True))
    with TestClient(create_app(services)) as client:
        answer = client.post("/v1/deliveries/retry", json={"filter": {"status": "dead"}}, headers=admin).json()
    drain(services)
    assert (answer["acted"], answer["enqueued"], rows(services, [dead])[0].status, len(stub.sent)) == (1, True, "sent", 1)


def test_retry_refuses_a_sent_delivery_with_its_reason_and_changes_nothing(world, run: Run):
    services, customer_id, _ = world
    [dead] = deliveries_in(services, customer_id, "dead")
    [sent] = deliveries_in(services, customer_id, "sent", error=None)
    done = run("deliveries", "retry", str(dead), str(sent))
    assert (done.exit_code, [r.status for r in rows(services, [dead, sent])], audit_rows(services)) == (
        RET_INVALID, ["dead", "sent"], [])
    assert f"ids[1]: delivery {sent} is sent; only dead or failed deliveries can be retried" in done.output


def test_an_unknown_id_is_named_and_nothing_changes(world, run: Run):
    services, customer_id, _ = world
    [dead] = deliveries_in(services, customer_id, "dead")
    done = run("deliveries", "drop", str(dead), "999999")
    assert (done.exit_code, rows(services, [dead])[0].status) == (RET_NOT_FOUND, "dead")
    assert "no delivery has the id 999999" in done.output


def test_retry_by_filter_goes_in_batches_takes_only_what_it_selects_and_counts_them(world, run: Run,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    services, customer_id, _ = world
    monkeypatch.setattr(actions, "BATCH", 2)
    dead = deliveries_in(services, customer_id, "dead", 5)
    failed = deliveries_in(services, customer_id, "failed", 1)
    other = deliveries_in(services, customer_id, "dead", 1, channel="sms")
    sent = deliveries_in(services, customer_id, "sent", 1, error=None)
    done = run("deliveries", "retry", "--channel", "email")
    assert (done.stdout, [r.status for r in rows(services, dead + failed + other + sent)], audit_rows(services)) == (
        "retried 6 deliveries\n", ["pending"] * 6 + ["dead", "sent"],
        [(ME, "deliveries.retry", {"filter": {"channel": "email"}}, 6, True)])


def test_retry_by_a_status_it_does_not_apply_to_is_refused(world, run: Run):
    services, customer_id, _ = world
    deliveries_in(services, customer_id, "sent", error=None)
    done = run("deliveries", "retry", "--status", "sent")
    assert (done.exit_code, audit_rows(services)) == (RET_INVALID, [])
    assert "filter.status: sent deliveries cannot be retried; only dead or failed deliveries can be retried" in done.output


def test_an_action_without_ids_filter_or_all_is_a_usage_error(world, run: Run):
    services, customer_id, _ = world
    deliveries_in(services, customer_id, "dead")
    done = run("deliveries", "retry")
    assert (done.exit_code, audit_rows(services)) == (RET_USAGE, [])
    assert "give the IDs of the deliveries" in done.output


# Deliveries: drop, resend, mark sent


def test_drop_gives_a_delivery_up_and_keeps_who_and_when(world, run: Run):
    services, customer_id, _ = world
    [dead] = deliveries_in(services, customer_id, "dead")
    run("deliveries", "drop", str(dead))
    [row] = rows(services, [dead])
    assert (row.status, row.dropped_by, row.dropped_at is not None, row.error) == (
        "dropped", ME, True, "smtp: connection refused")


def test_a_dropped_pending_delivery_is_never_sent(world, run: Run):
    services, customer_id, stub = world
    [pending] = add_deliveries(services, customer_id, 1)
    run("deliveries", "drop", str(pending))
    services.deliverer.deliver_many([pending], NOON)
    assert (rows(services, [pending])[0].status, stub.sent) == ("dropped", [])


def test_drop_refuses_a_held_delivery(world, run: Run):
    services, customer_id, _ = world
    [held] = deliveries_in(services, customer_id, "held", error="unsubscribed from email topic surveys")
    done = run("deliveries", "drop", str(held))
    assert (done.exit_code, rows(services, [held])[0].status) == (RET_INVALID, "held")
    assert f"delivery {held} is held; only dead, failed, unknown or pending deliveries can be dropped" in done.output


def test_mark_sent_takes_a_filter(world, run: Run):
    services, customer_id, _ = world
    unknown = deliveries_in(services, customer_id, "unknown", 2, attempts=1)
    done = run("deliveries", "mark-sent", "--status", "unknown")
    assert (done.stdout, [r.status for r in rows(services, unknown)]) == ("marked sent 2 deliveries\n", ["sent"] * 2)


# Deliveries: list


def test_list_filters_held_deliveries_by_reason_and_shows_it(world, run: Run):
    services, customer_id, _ = world
    deliveries_in(services, customer_id, "held", error="frequency cap: 3 email messages in the last 1d (cap 3)")
    [unsubscribed] = deliveries_in(services, customer_id, "held", error="unsubscribed from email topic surveys")
    listed = json.loads(run("deliveries", "list", "--status", "held", "--reason", "UNSUBSCRIBED", "--json").output)
    assert [(d["id"], d["status"], d["error"]) for d in listed] == [
        (unsubscribed, "held", "unsubscribed from email topic surveys")]


def test_list_filters_by_creation_time(world, run: Run):
    services, customer_id, _ = world
    [old, new] = deliveries_in(services, customer_id, "dead", 2)
    with services.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id == new).values(created_at=NOON + timedelta(hours=2)))
    since = (NOON + timedelta(hours=1)).isoformat()
    listed = json.loads(run("deliveries", "list", "--since", since, "--json").output)
    before = json.loads(run("deliveries", "list", "--until", since, "--json").output)
    assert ([d["id"] for d in listed], [d["id"] for d in before]) == ([new], [old])


def test_a_window_that_ends_before_it_starts_is_refused(world, run: Run):
    done = run("deliveries", "list", "--since", "2026-12-02T00:00:00Z", "--until", "2026-12-01T00:00:00Z")
    assert done.exit_code == RET_INVALID
    assert "since (2026-12-02T00:00:00+00:00) must be before until (2026-12-01T00:00:00+00:00)" in done.output


def test_a_bad_time_is_a_usage_error_naming_it(world, run: Run):
    done = run("deliveries", "list", "--since", "yesterday")
    assert (done.exit_code, "'yesterday' is neither a time" in done.output) == (RET_USAGE, True)


# Events


def test_events_failed_lists_failing_and_failed_events_with_their_error(any_services: Services, run: Run):
    services = any_services
    [failed] = failed_events(services, 1)
    [failing] = failed_events(services, 1, attempts=2)
    failed_events(services, 1, attempts=0)  # pending, never failed
    failed_events(services, 1, applied=True, attempts=1)  # applied after a failure
    listed = json.loads(run("events", "failed", "--json").output)
    assert [(e["id"], e["status"], e["attempts"], e["error"]) for e in listed] == [
        (failed, "failed", MAX_EVENT_ATTEMPTS, "RuntimeError: the database was away"),
        (failing, "failing", 2, "RuntimeError: the database was away")]


def test_a_retried_event_is_applied(world):
    services, _, _ = world
    [failed] = failed_events(services, 1)
    admin = basic(create_key(services, "ops", admin=True))
    with TestClient(create_app(services)) as client:
        answer = client.post("/v1/events/failed/retry", json={"ids": [failed]}, headers=admin).json()
    drain(services)
    with services.sessions() as session:
        event = session.get(Event, failed)
        assert event is not None
        assert ([e["attempts"] for e in answer["events"]], answer["enqueued"], event.processed_at is not None) == (
            [0], True, True)


def test_dropping_an_event_keeps_it_and_no_worker_applies_it(world, run: Run):
    services, _, _ = world
    [failed] = failed_events(services, 1)
    run("events", "drop", "--name", "order_completed")
    services.enqueue_events([failed])  # a message that was still in a queue
    drain(services)
    listed = json.loads(run("events", "failed", "--status", "dropped", "--json").output)
    with services.sessions() as session:
        applied_to = session.execute(select(Event.customer_id).where(Event.id == failed)).scalar_one()
    assert ([(e["id"], e["status"], e["droppedBy"], e["attempts"]) for e in listed], applied_to) == (
        [(failed, "dropped", ME, 5)], None)


def test_events_retry_refuses_an_applied_event_with_its_reason(any_services: Services, run: Run):
    services = any_services
    [applied] = failed_events(services, 1, applied=True, attempts=1)
    [pending] = failed_events(services, 1, attempts=0)
    done = run("events", "retry", str(applied), str(pending))
    assert done.exit_code == RET_INVALID
    assert (f"ids[0]: event {applied} was applied at 2026" in done.output,
            f"ids[1]: event {pending} has not failed: it waits for a worker; only failing or failed events can be "
            "retried" in done.output) == (True, True)


# The audit log and keys


def test_journey_audit_lists_every_action_newest_first(world, run: Run):
    services, customer_id, _ = world
    [dead] = deliveries_in(services, customer_id, "dead")
    failed_events(services, 1)
    run("deliveries", "drop", str(dead))
    run("events", "retry", "--all")
    listed = json.loads(run("audit", "--json").output)
    assert [(a["actor"], a["action"], a["selection"], a["acted"]) for a in listed] == [
        (ME, "events.retry", {"filter": {}}, 1), (ME, "deliveries.drop", {"ids": [dead]}, 1)]


@pytest.fixture
def api(world) -> Iterator[tuple[TestClient, Services, int]]:  # type: ignore[no-untyped-def]
    services, customer_id, _ = world
    with TestClient(create_app(services)) as client:
        yield client, services, customer_id


def test_the_audit_names_the_key_by_id_prefix_and_name_never_the_key(api):
    client, services, customer_id = api
    secret = create_key(services, "ops", admin=True)
    [dead] = deliveries_in(services, customer_id, "dead")
    client.post("/v1/deliveries/drop", json={"ids": [dead]}, headers=basic(secret))
    [entry] = client.get("/v1/audit", headers=basic(secret)).json()["entries"]
    with services.sessions() as session:
        key = session.execute(select(ApiKey)).scalar_one()
    assert (entry["actor"], secret in json.dumps(entry)) == (f"key {key.id} {key.prefix}… (ops)", False)


def test_a_read_key_may_look_but_not_act(api):
    client, services, customer_id = api
    read = basic(create_key(services, "watcher", scope="read"))
    [dead] = deliveries_in(services, customer_id, "dead")
    looked = [client.get(path, headers=read).status_code
              for path in ("/v1/deliveries?status=dead", "/v1/events/failed", "/v1/audit", "/v1/customers/ada")]
    acted = client.post("/v1/deliveries/retry", json={"ids": [dead]}, headers=read)
    assert (looked, acted.status_code, acted.json()["message"], rows(services, [dead])[0].status) == (
        [200] * 4, 403, "this is a read key, which may look but not act; retry of deliveries needs an admin key "
                        "(`journey keys create NAME --admin`)", "dead")


def test_a_read_key_cannot_send_events_and_a_write_key_cannot_look(api):
    client, services, _ = api
    read = basic(create_key(services, "watcher", scope="read"))
    write = basic(create_key(services, "app"))
    sent = client.post("/v1/track", json={"userId": "ada", "event": "x"}, headers=read)
    looked = client.get("/v1/deliveries", headers=write)
    assert (sent.status_code, looked.status_code, "read key" in looked.json()["message"]) == (403, 403, True)


def test_the_api_refuses_a_body_that_names_ids_and_a_filter(api):
    client, services, customer_id = api
    admin = basic(create_key(services, "ops", admin=True))
    answer = client.post("/v1/deliveries/retry", json={"ids": [1], "filter": {}}, headers=admin)
    assert (answer.status_code, answer.json()["errors"][0]["message"]) == (
        400, "give the deliveries as ids, a filter, or all: true (one of them), not ids and filter")


def test_the_openapi_document_describes_the_actions(api):
    client, _, _ = api
    document = client.get("/openapi.json").json()
    retry = document["paths"]["/v1/deliveries/retry"]["post"]
    assert ({"/v1/events/failed/drop", "/v1/audit"} <= set(document["paths"]),
            retry["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "status" in [p["name"] for p in document["paths"]["/v1/deliveries"]["get"]["parameters"]]) == (
        True, "#/components/schemas/DeliveryAction", True)


def test_keys_create_read_makes_a_read_key_and_the_list_never_shows_it(any_services: Services, run: Run):
    made = run("keys", "create", "watcher", "--read")
    secret = made.stdout.strip()
    listed = run("keys", "list").output
    assert (secret.startswith("je_read_"), secret in listed, "read" in listed.splitlines()[1]) == (True, False, True)


@pytest.mark.parametrize(("path", "problem"), [
    ("/v1/deliveries?status=lost", "status"),
    ("/v1/deliveries?since=2026-12-01T00:00:00", "since"),
    ("/v1/deliveries?sort=id", "sort"),
    ("/v1/events/failed?status=applied", "status"),
    ("/v1/audit?cursor=abc", "cursor"),
])
def test_a_bad_listing_query_is_a_400_naming_the_parameter(api, path: str, problem: str):
    client, services, _ = api
    answer = client.get(path, headers=basic(create_key(services, "ops", admin=True)))
    assert (answer.status_code, [e["path"] for e in answer.json()["errors"]]) == (400, [problem])


@pytest.mark.parametrize("body", [{"ids": []}, {"ids": [0]}, {"ids": [2**63]}, {"filter": {"status": "lost"}},
                                  {"filter": {"since": "soon"}}, {"everything": True}, [], "x"])
def test_a_bad_action_body_is_a_400_and_changes_nothing(api, body: Any):
    client, services, customer_id = api
    [dead] = deliveries_in(services, customer_id, "dead")
    answer = client.post("/v1/deliveries/drop", json=body, headers=basic(create_key(services, "ops", admin=True)))
    assert (answer.status_code, answer.json()["code"], rows(services, [dead])[0].status, audit_rows(services)) == (
        400, "invalid_request", "dead", [])
