"""Journey counts: the counts the workers keep as they write the trace equal a recount of
the trace by the same rule, and a holdout converts when its customer reaches the goal in time."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from engine import counters
from engine.storage.models import Enrollment, JourneyCount
from engine.twin import Twin

ROOT = Path(__file__).parents[2]
START = dt.datetime(2024, 5, 6, 8, tzinfo=dt.timezone.utc)

EXPERIMENT = """
id: experiment
name: Offer experiment
stage: consideration
trigger: {event: signed_up}
goal: {event: order_completed, when: "event.properties.total > 10", within: 10d}
policy: {kind: transactional}
sample:
  events:
    signed_up: {properties: {plan: pro}}
    order_completed: {properties: {total: 40}}
steps:
  - id: pick
    split:
      - {name: a, weight: 45, goto: offer_a}
      - {name: b, weight: 45, goto: offer_b}
      - {holdout: 10}
  - id: offer_a
    send: {channel: log, text: "15% off"}
    goto: plan
  - id: offer_b
    send: {channel: log, text: "free shipping"}
  - id: plan
    branch:
      - when: 'trigger.properties.plan == "pro"'
        goto: wait_order
      - else: wait_order
  - id: wait_order
    wait: 3d
"""


def _counts(twin: Twin) -> Counter[tuple[object, ...]]:
    table = JourneyCount.__table__.c
    with twin.services.sessions() as session:
        rows = session.execute(
            select(table.journey_id, table.version, table.day, table.step, table.what, table.detail, table.value,
                   func.sum(table.count))
            .group_by(table.journey_id, table.version, table.day, table.step, table.what, table.detail, table.value)
        ).all()
    return Counter({tuple(row[:-1]): int(row[-1]) for row in rows if row[-1]})


def _play(twin: Twin) -> None:
    for path in sorted((ROOT / "journeys" / "samples").glob("*.jsonl")):
        twin.send_many(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    for n in range(120):
        at = twin.now + dt.timedelta(hours=1)
        twin.send({"type": "track", "event": "signed_up", "userId": f"u{n}", "timestamp": at.isoformat(),
                   "properties": {"plan": "pro" if n % 3 else "free"}})
        if n % 4 == 0:
            twin.send({"type": "track", "event": "order_completed", "userId": f"u{n}",
                       "timestamp": at.isoformat(),
                       "properties": {"total": 40 if n % 8 else 5}})
    twin.advance(dt.timedelta(days=40))


def test_the_counts_kept_live_equal_a_recount_of_the_trace(tmp_path):
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT)
    journeys = [*sorted((ROOT / "journeys").glob("*.yaml")), tmp_path / "experiment.yaml"]
    with Twin(journeys, start=START) as twin:
        _play(twin)
        live = _counts(twin)
        with twin.services.sessions.begin() as session:
            versions = {(j, v): twin.services.deployed.get(j, v, session)
                        for j, v in session.execute(select(Enrollment.journey_id, Enrollment.version).distinct())}
            counters.rebuild(session, versions)
        assert live and _counts(twin) == live


def test_a_holdout_converts_on_the_goal_within_its_window_and_its_condition(tmp_path):
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT)
    with Twin([tmp_path / "experiment.yaml"], start=START) as twin:
        # Find three customers the split holds out: their enrollment ends at once.
        held: list[str] = []
        n = 0
        while len(held) < 3:
            user = f"h{n}"
            n += 1
            twin.send({"type": "track", "event": "signed_up", "userId": user, "properties": {"plan": "free"}})
            with twin.services.sessions() as session:
                state = session.execute(select(Enrollment.state).where(Enrollment.id.like("experiment:%"))
                                        .order_by(Enrollment.started_at.desc(), Enrollment.id.desc())).scalars().first()
            if state and state["variant"].get("pick") == "control":
                held.append(user)
        late, cheap, in_time = held
        twin.advance(dt.timedelta(days=2))
        twin.send({"type": "track", "event": "order_completed", "userId": in_time, "properties": {"total": 40}})
        twin.send({"type": "track", "event": "order_completed", "userId": cheap, "properties": {"total": 5}})
        twin.advance(dt.timedelta(days=9))  # beyond the goal's 10 days for all three
        twin.send({"type": "track", "event": "order_completed", "userId": late, "properties": {"total": 40}})
        with twin.services.sessions() as session:
            converted = {row.state["customer_id"]: row.converted_at is not None
                         for row in session.execute(select(Enrollment).where(Enrollment.state["variant"]["pick"].as_string()
                                                                             == "control")).scalars()}
            later = sum(n for key, n in counters.read(session, "experiment", None, dt.date(2024, 1, 1), dt.date(2025, 1, 1))
                        if key.what == "converted_later")
        assert (sum(converted.values()), later) == (1, 1)
