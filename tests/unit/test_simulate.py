"""The simulator and ``journey simulate``: shipped journeys against their sample events."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.definitions import load_journey
from engine.runtime import start
from engine.simulate import Simulator

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
    result = invoke("simulate", str(ROOT / "journeys" / "cart_abandonment.yaml"), "--events", str(ROOT / "journeys" / "samples" / "cart_abandonment.jsonl"))
    assert result.exit_code == 0
    out = result.output
    assert out.index("ada (") < out.index("grace (") < out.index("linus (")
    assert "2024-05-06 11:00  cart_abandonment     reminder         send email cart_reminder (marketing): 'Ada, your cart is waiting'" in out
    assert "converted: goal:order_completed" in out
    assert out.rstrip().splitlines()[-2] == "3 customers, 3 enrollments (1 completed, 2 converted), 9 sends"


def test_each_send_shows_its_kind():
    journey, events = str(ROOT / "journeys" / "order_followup.yaml"), str(ROOT / "journeys" / "samples" / "order_followup.jsonl")
    result = invoke("simulate", journey, "--events", events, "--json")
    sends = [json.loads(line) for line in result.output.splitlines() if json.loads(line)["effect"] == "send"]
    assert {(e["step"], e["kind"]) for e in sends} == {("thank_you", "transactional"), ("review_request", "marketing")}
    text = invoke("simulate", journey, "--events", events).output
    assert "thank_you        send email order_thanks (transactional): 'Thank you for your order o-1001'" in text


def test_until_stops_the_clock(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"type": "track", "event": "order_completed", "userId": "u", "timestamp": "2024-05-06T10:00:00Z",
                                  "properties": {"order_id": "o", "total": 5}}) + "\n")  # fmt: skip
    short = invoke("simulate", str(ROOT / "journeys" / "winback.yaml"), "--events", str(events), "--until", "30d", "--json")
    assert [json.loads(x)["effect"] for x in short.output.splitlines()] == ["enter", "stage"]
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


def test_a_whole_directory_routes_one_event_to_every_journey_it_triggers():
    journeys = [load_journey(ROOT / "journeys" / f"{n}.yaml") for n in SHIPPED]
    sim = Simulator(journeys)
    at = dt.datetime(2024, 5, 6, 10, tzinfo=dt.timezone.utc)
    sim.send({"type": "identify", "userId": "ada", "traits": {"first_name": "Ada", "tier": "silver"}, "timestamp": at.isoformat()})
    sim.send({"type": "track", "event": "order_completed", "userId": "ada", "timestamp": at.isoformat(),
              "properties": {"order_id": "o-1", "total": 20.0, "currency": "EUR", "item_count": 1}})  # fmt: skip
    assert sorted(e.journey_id for e in sim.enrollments.values()) == ["loyalty_points", "order_followup", "winback"]
    # Entering moves the stage forward only: purchase, then retention, whatever the order.
    assert sim.customer("ada").stage == "retention"
    assert [h["to"] for h in sim.customer("ada").stage_history] == ["retention"]


def test_a_command_key_applied_twice_takes_effect_once():
    journey = load_journey(ROOT / "journeys" / "loyalty_points.yaml")
    sim = Simulator([journey])
    at = dt.datetime(2024, 5, 6, 10, tzinfo=dt.timezone.utc)
    sim.send({"type": "track", "event": "order_completed", "userId": "ada", "timestamp": at.isoformat(), "properties": {"order_id": "o", "total": 50}})
    state = next(iter(sim.enrollments.values()))
    again = start(journey, state.id, {"id": "ada", "traits": {}, "stage": None, "points": 0}, state.trigger, at)
    sim._apply(journey, again)  # a redelivered message: same keys
    assert sim.customer("ada").points == 50
