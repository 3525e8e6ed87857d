"""The twin and ``journey simulate``: shipped journeys against their sample events, on the real pipeline."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.definitions import load_journey
from engine.twin import Twin, enrollments, stage_changes

ROOT = Path(__file__).parents[2]
SHIPPED = sorted(p.stem for p in (ROOT / "journeys").glob("*.yaml"))


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_every_shipped_journey_has_a_sample_events_file():
    assert SHIPPED and all((ROOT / "journeys" / "samples" / f"{name}.jsonl").exists() for name in SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_sample_runs_renders_every_message_and_ends_every_enrollment(name):
    result = invoke("simulate", str(ROOT / "journeys" / f"{name}.yaml"), "--events", str(ROOT / "journeys" / "samples" / f"{name}.jsonl"), "--json")
    assert result.exit_code == 0, result.output
    effects = [json.loads(line) for line in result.output.splitlines()]
    sends = [e for e in effects if e["effect"] == "send"]
    assert sends and all("error" not in e and e["channel"] for e in sends)
    assert all({"at", "customer", "journey", "step", "effect"} <= set(e) for e in effects)
    entered = {e["enrollment"] for e in effects if e["effect"] == "enter"}
    ended = {e["enrollment"] for e in effects if e["effect"] == "exit"}
    assert entered == ended


def test_human_output_is_a_timeline_per_customer():
    result = invoke("simulate", str(ROOT / "journeys" / "cart_abandonment.yaml"),
                    "--events", str(ROOT / "journeys" / "samples" / "cart_abandonment.jsonl"))
    assert result.exit_code == 0
    out = result.output
    assert out.index("ada (") < out.index("grace (") < out.index("linus (")
    assert "2024-05-06 11:00  cart_abandonment     reminder         send email cart_reminder (marketing): 'Ada, your cart is waiting'" in out
    assert "converted: goal:order_completed" in out
    # grace was never in the audience: no removal for her
    assert out.rstrip().splitlines()[-2] == "4 customers, 4 enrollments (1 completed, 3 converted), 7 sends, 1 held"


def test_the_samples_anonymous_checkout_then_identify_is_one_customer_converted_without_a_reminder():
    result = invoke("simulate", str(ROOT / "journeys" / "cart_abandonment.yaml"),
                    "--events", str(ROOT / "journeys" / "samples" / "cart_abandonment.jsonl"), "--json")
    margaret = [json.loads(line) for line in result.output.splitlines() if json.loads(line)["customer"] == "margaret"]
    assert [(e["effect"], e.get("status")) for e in margaret if e["effect"] in ("enter", "send", "hold", "exit")] == [
        ("enter", None), ("exit", "converted")]


def test_quiet_hours_defer_graces_reminder_and_her_order_then_holds_it():
    # 06:30 in New York: the reminder falls due at 07:30, inside the quiet hours (21:00-08:00);
    # it waits for 08:00, when she has just ordered: held, with the reason.
    result = invoke("simulate", str(ROOT / "journeys" / "cart_abandonment.yaml"),
                    "--events", str(ROOT / "journeys" / "samples" / "cart_abandonment.jsonl"))
    grace = result.output.split("grace (")[1].split("\n\n")[0]
    assert ("2024-05-06 11:30  cart_abandonment     reminder         DEFERRED email cart_reminder (marketing): "
            "quiet hours 21:00-08:00 America/New_York: deferred to 2024-05-06T12:00:00+00:00") in grace
    assert ("2024-05-06 12:00  cart_abandonment     reminder         HELD email cart_reminder (marketing): "
            "the enrollment converted at 2024-05-06T12:00:00+00:00 while this send waited") in grace
    assert "send email" not in grace


def test_an_anonymous_checkout_then_identify_then_order_is_one_converted_customer_without_a_reminder(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in [
        {"type": "track", "anonymousId": "visitor-1", "event": "checkout_started", "timestamp": "2024-05-06T10:00:00Z",
         "properties": {"cart_value": 50, "order_id": "o-9", "currency": "EUR", "item_count": 1}},
        {"type": "identify", "anonymousId": "visitor-1", "userId": "margaret", "timestamp": "2024-05-06T10:20:00Z",
         "traits": {"first_name": "Margaret", "email": "margaret@example.com"}},
        {"type": "track", "userId": "margaret", "event": "order_completed", "timestamp": "2024-05-06T10:40:00Z",
         "properties": {"order_id": "o-9", "total": 50}},
    ]) + "\n")  # fmt: skip
    result = invoke("simulate", str(ROOT / "journeys" / "cart_abandonment.yaml"), "--events", str(events), "--json")
    effects = [json.loads(line) for line in result.output.splitlines()]
    assert {e["customer"] for e in effects} == {"margaret"}
    assert [(e["effect"], e["status"]) for e in effects if e["effect"] == "exit"] == [("exit", "converted")]
    assert not [e for e in effects if e["step"] == "reminder"]


def test_several_paths_run_together():
    journeys = ROOT / "journeys"
    result = invoke("simulate", str(journeys / "cart_abandonment.yaml"), str(journeys / "order_followup.yaml"),
                    "--events", str(journeys / "samples" / "cart_abandonment.jsonl"), "--json")
    assert result.exit_code == 0, result.output
    entered = {json.loads(line)["journey"] for line in result.output.splitlines() if json.loads(line)["effect"] == "enter"}
    assert entered == {"cart_abandonment", "order_followup"}


def test_each_send_shows_its_kind():
    journey, events = str(ROOT / "journeys" / "order_followup.yaml"), str(ROOT / "journeys" / "samples" / "order_followup.jsonl")
    result = invoke("simulate", journey, "--events", events, "--json")
    sends = [json.loads(line) for line in result.output.splitlines() if json.loads(line)["effect"] == "send"]
    assert {(e["step"], e["kind"]) for e in sends} == {("thank_you", "transactional"), ("review_request", "marketing")}
    text = invoke("simulate", journey, "--events", events).output
    assert "thank_you        send email order_thanks (transactional): 'Thank you for your order o-1001'" in text


def test_until_stops_the_clock(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in [
        {"type": "identify", "userId": "u", "traits": {"first_name": "Uma", "email": "u@example.com", "phone": "+15550100"},
         "timestamp": "2024-05-06T09:00:00Z"},
        {"type": "track", "event": "order_completed", "userId": "u", "timestamp": "2024-05-06T10:00:00Z",
         "properties": {"order_id": "o", "total": 5}},
    ]) + "\n")  # fmt: skip
    short = invoke("simulate", str(ROOT / "journeys" / "winback.yaml"), "--events", str(events), "--until", "30d", "--json")
    assert [json.loads(x)["effect"] for x in short.output.splitlines()] == ["event", "event", "enter", "stage"]
    full = invoke("simulate", str(ROOT / "journeys" / "winback.yaml"), "--events", str(events), "--json")
    assert [json.loads(x)["step"] for x in full.output.splitlines() if json.loads(x)["effect"] == "send"] == ["offer", "last_chance"]


def test_bad_input_is_reported_with_its_line(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "track", "event": "x", "userId": "u", "timestamp": "2024-05-06T10:00:00Z"}\n{not json\n')
    result = CliRunner().invoke(main, ["simulate", str(ROOT / "journeys"), "--events", str(events)])
    assert result.exit_code == 1 and f"{events}:2: not JSON" in result.output
    missing = CliRunner().invoke(main, ["simulate", str(ROOT / "journeys"), "--events", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == RET_NOT_FOUND
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: broken\n")
    invalid = CliRunner().invoke(main, ["simulate", str(broken), "--events", str(events)])
    assert invalid.exit_code == RET_INVALID and "broken.yaml is invalid" in invalid.output
    bad_until = CliRunner().invoke(main, ["simulate", str(ROOT / "journeys"), "--events", str(events), "--until", "3 days"])
    assert bad_until.exit_code == 2 and "not a duration" in bad_until.output


def test_a_misspelt_type_in_an_events_file_gets_a_suggestion_and_its_line(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "trak", "event": "checkout_started", "userId": "u", "timestamp": "2024-05-06T10:00:00Z"}\n')

    result = CliRunner().invoke(main, ["simulate", str(ROOT / "journeys"), "--events", str(events)])

    assert result.exit_code == 1
    assert f"{events}:1: " in result.output
    assert "unknown type 'trak'. Did you mean 'track'?" in result.output


def test_a_directory_of_events_says_to_give_one_file(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["simulate", "journeys", "--events", "journeys/samples"])

    assert result.exit_code == RET_INVALID
    assert result.output == (
        "Error: --events journeys/samples is a directory; give one file of events (JSON lines), "
        "such as --events journeys/samples/cart_abandonment.jsonl\n"
    )


def test_a_whole_directory_routes_one_event_to_every_journey_it_triggers():
    journeys = [load_journey(ROOT / "journeys" / f"{n}.yaml") for n in SHIPPED]
    at = dt.datetime(2024, 5, 6, 10, tzinfo=dt.timezone.utc)
    with Twin(journeys, start=at) as twin:
        twin.send({"type": "identify", "userId": "ada", "traits": {"first_name": "Ada", "tier": "silver", "email": "ada@example.com"}})
        twin.send({"type": "track", "event": "order_completed", "userId": "ada",
                   "properties": {"order_id": "o-1", "total": 20.0, "currency": "EUR", "item_count": 1}})  # fmt: skip
        assert sorted(e.journey_id for e in twin.read(enrollments, "ada")) == ["loyalty_points", "order_followup", "winback"]
        # Entering moves the stage forward only: purchase, then retention, whatever the order.
        assert twin.profile("ada").stage == "retention"
        assert [h["to"] for h in twin.read(stage_changes, "ada")][-1] == "retention"


def test_an_event_sent_twice_takes_effect_once():
    journey = load_journey(ROOT / "journeys" / "loyalty_points.yaml")
    at = dt.datetime(2024, 5, 6, 10, tzinfo=dt.timezone.utc)
    with Twin([journey], start=at) as twin:
        order = {"type": "track", "event": "order_completed", "userId": "ada", "messageId": "m-1",
                 "properties": {"order_id": "o", "total": 50}}
        twin.send(order)
        twin.send(order)  # a client's retry: the same messageId
        assert twin.profile("ada").points == 50 and len(twin.read(enrollments, "ada")) == 1

