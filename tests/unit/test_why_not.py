"""Why not, recorded: every customer a journey's trigger event reached but the journey turned
away is recorded with the reason (docs/runtime.md, "Why not"), on the twin (the same orchestrator
the workers run), counted per journey for stats and kept, latest few, for ``journey trace``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from engine import analytics
from engine.analytics import Window
from engine.definitions import Journey, load_text
from engine.orchestrator import TURN_AWAYS_KEPT
from engine.testing import JourneyTest
from engine.trace import explain, format_text

ROOT = Path(__file__).parents[2]


def big_carts(entry: str = "") -> Journey:
    text = (
        "id: big_carts\nname: Big carts\nstage: consideration\n"
        "trigger: {event: checkout_started, when: event.properties.cart_value > 100}\n"
        f"{entry}"
        "sample: {events: {checkout_started: {properties: {cart_value: 120}}}}\n"
        "steps:\n  - id: pause\n    wait: 30d\n"
    )
    return load_text(text, filename="journeys/big_carts.yaml", templates=ROOT / "journeys" / "templates")


def test_a_false_trigger_condition_is_recorded_with_its_value():
    t = JourneyTest(big_carts(), customer_id="ada")
    t.send("checkout_started", cart_value=42)
    [why] = t.not_entered
    assert (why["journey"], why["reason"], why["detail"], why["value"]) == (
        "big_carts", "condition_false", "event.properties.cart_value > 100 was false",
        {"event.properties.cart_value": 42})


def test_refused_reentry_is_recorded():
    t = JourneyTest(big_carts("entry: {reentry: never}\n"), customer_id="ada")
    t.send("checkout_started", cart_value=150)
    t.advance("31d")
    t.send("checkout_started", cart_value=150)
    assert [w["reason"] for w in t.not_entered] == ["reentry_refused"]


def test_the_entry_limit_is_recorded():
    t = JourneyTest(big_carts("entry: {reentry: always}\n"), customer_id="ada")
    t.send("checkout_started", cart_value=150)
    t.send("checkout_started", cart_value=160)
    assert [w["reason"] for w in t.not_entered] == ["entry_limit"]


def test_a_paused_journey_turns_the_customer_away():
    t = JourneyTest(big_carts(), customer_id="ada")
    t.twin.set_status("big_carts", "paused")
    t.send("checkout_started", cart_value=150)
    assert ([w["reason"] for w in t.not_entered], t.enrollments) == (["paused"], [])


def test_an_event_no_trigger_matches_is_not_a_turn_away():
    t = JourneyTest(big_carts(), customer_id="ada")
    t.send("product_viewed", product_id="p-1")
    assert t.not_entered == []


def test_only_the_latest_turn_aways_of_a_customer_are_kept():
    t = JourneyTest(big_carts(), customer_id="ada")
    for value in range(TURN_AWAYS_KEPT + 5):
        t.send("checkout_started", cart_value=value)
    kept = t.not_entered
    assert [w["value"]["event.properties.cart_value"] for w in kept] == list(range(5, TURN_AWAYS_KEPT + 5))


def test_stats_count_every_turn_away_by_reason_beyond_those_kept():
    t = JourneyTest(big_carts(), customer_id="ada")
    for value in range(TURN_AWAYS_KEPT + 5):
        t.send("checkout_started", cart_value=value)
    t.send("checkout_started", cart_value=150)
    t.send("checkout_started", cart_value=150)
    journey = t.journeys["big_carts"]
    window = Window(t.now - timedelta(days=1), t.now)
    stats = t.twin.read(analytics.journey_stats, "big_carts", {1: journey}, window, t.now)
    assert stats["not_entered"] == {"condition_false": TURN_AWAYS_KEPT + 5, "entry_limit": 1}


def test_stats_count_the_turn_aways_of_the_window_by_day():
    t = JourneyTest(big_carts(), customer_id="ada")
    t.send("checkout_started", cart_value=1)
    t.advance("3d")
    t.send("checkout_started", cart_value=2)
    t.send("checkout_started", cart_value=3)
    journey = t.journeys["big_carts"]
    stats = t.twin.read(analytics.journey_stats, "big_carts", {1: journey}, Window(t.now - timedelta(days=1), t.now), t.now)
    assert stats["not_entered"] == {"condition_false": 2}


def test_journey_trace_says_why_the_customer_was_not_entered():
    t = JourneyTest(big_carts(), customer_id="ada")
    t.send("checkout_started", cart_value=42)
    explanation = t.twin.read(explain, "ada")
    assert ("not entered (condition_false): event.properties.cart_value > 100 was false "
            "(event.properties.cart_value=42)") in format_text(explanation)
