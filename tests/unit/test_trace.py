"""``journey trace``, ``GET /v1/customers/{id}`` and ``/trace``: a shipped journey run end
to end on the twin (and PostgreSQL), then explained."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from channels.log import PreviewChannel
from engine.api import create_app
from engine.cli import main
from engine.cli.codes import RET_NOT_FOUND
from engine.trace import explain, format_text
from tests.conftest import create_key
from tests.unit.test_journeys_e2e import engine, time_passes  # noqa: F401 - the fixture

__all__ = ["engine"]


@pytest.fixture
def abandoned_then_bought(engine):  # type: ignore[no-untyped-def]  # noqa: F811
    """Given bob started a checkout, got the reminder an hour later, then ordered."""
    services, send, recorder = engine
    send("identify", userId="bob", traits={"email": "bob@example.com", "first_name": "Bob"})
    send("track", userId="bob", event="checkout_started",
         properties={"cart_value": 80.0, "order_id": "o-9", "currency": "EUR", "item_count": 1})
    time_passes(services, timedelta(hours=2))
    send("track", userId="bob", event="order_completed", properties={"order_id": "o-9", "total": 80.0})
    return services


def journey(explanation, journey_id):  # type: ignore[no-untyped-def]
    return next(j for j in explanation["journeys"] if j["journey"] == journey_id)


def test_explanation_shows_the_path_conditions_wait_and_delivery_outcome(abandoned_then_bought):
    with abandoned_then_bought.sessions() as session:
        explanation = explain(session, "bob")

    assert explanation["userId"] == "bob"
    assert [(c["from"], c["to"]) for c in explanation["stageHistory"]] == [(None, "consideration"), ("consideration", "retention")]
    assert explanation["stage"] == "retention"
    assert explanation["points"] == 80
    assert [j["journey"] for j in explanation["journeys"]][0] == "cart_abandonment"  # the oldest first
    cart = journey(explanation, "cart_abandonment")
    assert (cart["version"], cart["status"], cart["reason"]) == (1, "converted", "goal:order_completed")
    assert cart["step"] is None and cart["waitingFor"] is None and cart["endedAt"] is not None
    path = [(t["step"], t["what"]) for t in cart["trace"]]
    assert path[:3] == [(None, "condition"), (None, "enter"), (None, "stage")]
    assert path.index(("wait_1h", "wait")) < path.index(("wait_1h", "resume")) < path.index(("reminder", "run"))
    assert path[-2:] == [("bought", "goal"), ("bought", "end")]  # never added to the audience: no removal
    trigger = cart["trace"][0]
    assert (trigger["detail"], trigger["value"], trigger["error"]) == (
        "trigger checkout_started: event.properties.cart_value > 0", True, None)
    reminder = next(d for d in cart["deliveries"] if d["step"] == "reminder")
    assert {k: reminder[k] for k in ("channel", "template", "kind", "status", "attempts", "error", "providerId")} == {
        "channel": "email", "template": "cart_reminder", "kind": "marketing", "status": "sent", "attempts": 1, "error": None,
        "providerId": "rec-1"}
    assert reminder["sentAt"] is not None

    # a condition that was false, and a delivery that failed with its reason
    loyalty = journey(explanation, "loyalty_points")
    assert ("tier_check", "condition", False) in [(t["step"], t["what"], t["value"]) for t in loyalty["trace"]]
    thanks = journey(explanation, "order_followup")
    assert thanks["status"] == "active" and thanks["step"] == "delivered"
    assert thanks["waitingFor"].startswith("for order_delivered until ")
    assert [(d["step"], d["kind"], d["status"]) for d in thanks["deliveries"]] == [("thank_you", "transactional", "failed")]
    assert "no field 'item_count'" in thanks["deliveries"][0]["error"]


def test_text_is_a_timeline_people_can_read(abandoned_then_bought):
    with abandoned_then_bought.sessions() as session:
        text = format_text(explain(session, "bob"))

    assert text.startswith("bob  stage retention  80 points\n")
    assert "  stage - -> consideration  " in text
    assert "\ncart_abandonment v1  converted (goal:order_completed)  started " in text
    assert "condition trigger checkout_started: event.properties.cart_value > 0 -> true\n" in text
    assert re.search(r"\n  \d\d:\d\d:\d\d  enter  checkout_started\n", text)
    assert re.search(r"  wait_1h  wait until (\d{4}-\d\d-\d\d )?\d\d:\d\d\n", text)
    assert "  reminder  send email cart_reminder (marketing) -> sent (provider id rec-1)\n" in text
    assert re.search(r"  bought  wait for order_completed until \d{4}-\d\d-\d\d \d\d:\d\d\n", text)
    assert "  bought  end converted  (goal:order_completed)\n" in text
    assert "delivery sent" not in text  # the outcome is on the send line, once
    assert "condition customer.points >= 1000 && (!has(customer.tier) || customer.tier != \"gold\") -> false\n" in text
    assert (
        "  thank_you  send email order_thanks (transactional) -> failed: template: template order_thanks.text "
        "(order_followup v1 templates/order_thanks.text.j2 line 3): no field 'item_count'"
    ) in text
    assert "\norder_followup v1  active at delivered  started " in text
    assert "  now at delivered, waiting for order_delivered until " in text


def test_a_condition_that_failed_shows_its_error():
    explanation = {
        "id": 7, "userId": None, "anonymousIds": ["a-1"], "stage": None, "stageHistory": [], "points": 0,
        "journeys": [{
            "id": "j:1", "journey": "j", "version": 2, "status": "exited", "startedAt": "2026-11-23T10:00:00+00:00",
            "endedAt": "2026-11-24T09:00:00+00:00", "reason": "exit_on:account_deleted", "step": None,
            "waitingFor": None, "variant": {"split": "b"}, "deliveries": [],
            "trace": [
                {"at": "2026-11-23T10:00:00+00:00", "step": "check", "what": "condition", "detail": "event.properties.total > 10",
                 "value": False, "error": "no such key: total"},
                {"at": "2026-11-23T10:00:00+00:00", "step": "pause", "what": "wait", "detail": "until 2026-11-23T11:00:00+00:00",
                 "value": "2026-11-23T11:00:00+00:00", "error": None},
                {"at": "2026-11-24T09:00:00+00:00", "step": "check", "what": "end", "detail": "exit_on:account_deleted",
                 "value": "exited", "error": None},
            ],
        }],
    }
    text = format_text(explanation)
    assert text.startswith("customer 7 / anonymous ids a-1  stage -  0 points\n")
    assert "j v2  exited (exit_on:account_deleted)  started 2026-11-23 10:00  ended 2026-11-24 09:00\n  variant split=b\n" in text
    assert "condition event.properties.total > 10 -> false  ERROR: no such key: total\n" in text
    assert "\n  10:00:00  pause  wait until 11:00\n" in text  # the same day: the time only
    assert "\n  2026-11-24\n  09:00:00  check  end exited" in text  # a new day is marked


def test_an_anonymous_visitors_journeys_stay_with_them_after_they_identify(engine):  # noqa: F811
    services, send, _ = engine
    send("identify", userId="cy", traits={"email": "cy@example.com", "first_name": "Cy"})
    send("track", anonymousId="visitor-1", event="checkout_started",
         properties={"cart_value": 30.0, "order_id": "o-5", "currency": "EUR", "item_count": 1})
    send("identify", userId="cy", anonymousId="visitor-1")  # merges the visitor into cy
    with services.sessions() as session:
        by_user, by_visitor = explain(session, "cy"), explain(session, "visitor-1")
    assert by_user == by_visitor
    assert by_user["anonymousIds"] == ["visitor-1"]
    assert [j["journey"] for j in by_user["journeys"]] == ["cart_abandonment"]


def test_unknown_customer_is_none(services):
    with services.sessions() as session:
        assert explain(session, "nobody") is None


def test_api_customer_view_and_trace(abandoned_then_bought):
    services = abandoned_then_bought
    admin = {"Authorization": "Basic " + base64.b64encode(f"{create_key(services, 'ops', admin=True)}:".encode()).decode()}
    write = {"Authorization": f"Bearer {create_key(services, 'app')}"}
    with TestClient(create_app(services)) as client:
        view = client.get("/v1/customers/bob", headers=admin)
        full = client.get("/v1/customers/bob/trace", headers=admin)
        assert client.get("/v1/customers/bob/trace", headers=write).status_code == 403
        assert client.get("/v1/customers/bob/trace").status_code == 401
        missing = client.get("/v1/customers/nobody/trace", headers=admin)
        assert client.get("/v1/customers/nobody", headers=admin).status_code == 404

    assert view.status_code == 200 and full.status_code == 200
    with services.sessions() as session:
        expected = json.loads(json.dumps(explain(session, "bob")))
    assert full.json() == expected
    body = view.json()
    assert {"id", "userId", "anonymousIds", "traits", "timezone", "stage", "stageHistory",
            "firstSeenAt", "lastSeenAt", "events", "journeys"} <= set(body)
    assert body["journeys"] == expected["journeys"]
    assert body["events"][0]["event"] == "order_completed"
    assert missing.status_code == 404
    assert missing.json()["message"] == "no customer is known by the user id or anonymous id 'nobody'"


def test_cli_trace(abandoned_then_bought, monkeypatch):
    services = abandoned_then_bought
    monkeypatch.setenv("DATABASE_URL", services.settings.database_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    runner = CliRunner()

    text = runner.invoke(main, ["trace", "bob"], catch_exceptions=False)
    as_json = runner.invoke(main, ["trace", "bob", "--json"], catch_exceptions=False)
    unknown = runner.invoke(main, ["trace", "nobody"], catch_exceptions=False)

    assert text.exit_code == 0
    assert "reminder  send email cart_reminder (marketing) -> sent (provider id rec-1)" in text.stdout
    assert as_json.exit_code == 0
    assert journey(json.loads(as_json.stdout), "cart_abandonment")["status"] == "converted"
    assert unknown.exit_code == RET_NOT_FOUND
    assert unknown.stderr == "Error: no customer is known by the user id or anonymous id 'nobody'\n"


def test_a_message_journey_dev_only_logged_reads_logged_not_sent(engine):  # noqa: F811
    services, send, _ = engine
    services.adapters["email"] = PreviewChannel("email")  # journey dev, without SMTP_URL
    send("identify", userId="lin", traits={"email": "lin@example.com", "first_name": "Lin"})
    send("track", userId="lin", event="order_completed",
         properties={"order_id": "o-5", "total": 12.0, "item_count": 1, "currency": "EUR"})
    with services.sessions() as session:
        text = format_text(explain(session, "lin"))
    assert "-> logged, not sent (email is not configured)" in text
