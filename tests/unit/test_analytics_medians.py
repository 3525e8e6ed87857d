"""The median wait at a step and the median time in a stage, on SQLite and PostgreSQL,
from rows whose times are known (no clock is read)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from engine import analytics, deploy
from engine.storage.models import Customer, Enrollment, StageChange
from tests.unit.test_analytics import JOURNEY

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
HOURS = (1, 3, 5, 7)  # the median of four is the mean of the middle two: 4h


def test_the_median_and_the_oldest_wait_at_a_step(any_services, tmp_path: Path):
    path = tmp_path / "trial.yaml"
    path.write_text(JOURNEY)
    with any_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW - timedelta(days=1))
        for i, hours in enumerate((1, 2, 9)):
            at = NOW - timedelta(hours=hours)
            session.add(Customer(id=i + 1, first_seen_at=at, last_seen_at=at, updated_at=at))
            session.flush()
            session.add(Enrollment(id=f"trial:{i}", journey_id="trial", version=1, customer_id=i + 1, status="active",
                                   step="hold", state={}, started_at=at, updated_at=at))
    with any_services.sessions() as session:
        definitions = analytics.definitions_for(session, any_services.deployed, "trial", None)
        stats = analytics.journey_stats(session, "trial", definitions,
                                        analytics.Window(NOW - timedelta(days=1), NOW), NOW)
    hold = next(s for s in stats["steps"] if s["id"] == "hold")
    assert (hold["waiting"], hold["wait"]) == (3, {"oldest_seconds": 9 * 3600.0, "median_seconds": 2 * 3600.0})


def test_the_median_time_in_a_stage_and_the_drop_off(any_services):
    start = NOW - timedelta(days=2)
    with any_services.sessions.begin() as session:
        for i in range(len(HOURS)):
            session.add(Customer(id=i + 1, first_seen_at=start, last_seen_at=start, updated_at=start, stage="purchase"))
        session.add(Customer(id=9, first_seen_at=start, last_seen_at=start, updated_at=start, stage="consideration"))
        session.flush()
        for i, hours in enumerate(HOURS):
            session.add(StageChange(customer_id=i + 1, from_stage=None, to_stage="consideration", at=start, reason="t"))
            session.add(StageChange(customer_id=i + 1, from_stage="consideration", to_stage="purchase",
                                    at=start + timedelta(hours=hours), reason="t"))
        session.add(StageChange(customer_id=9, from_stage=None, to_stage="consideration", at=start, reason="t"))
    with any_services.sessions() as session:
        funnel = analytics.stage_funnel(session, analytics.Window(NOW - timedelta(days=3), NOW), NOW)
    consideration = next(s for s in funnel["stages"] if s["stage"] == "consideration")
    assert (consideration["customers"], consideration["entered"], consideration["advanced"],
            consideration["drop_off"], consideration["median_seconds_in_stage"]) == (1, 5, 4, 0.2, 4 * 3600.0)


def test_deliveries_by_status_and_held_by_reason(any_services, tmp_path: Path):
    from engine.storage.models import Delivery

    path = tmp_path / "trial.yaml"
    path.write_text(JOURNEY)
    at = NOW - timedelta(hours=1)
    outcomes = [("sent", None), ("sent", None), ("failed", "550 no such mailbox"),
                ("held", "frequency cap: 3 log messages in the last 7d (cap 3)"),
                ("held", "frequency cap: 4 log messages in the last 7d (cap 3)"),
                ("held", "suppressed: hard bounce on log")]
    with any_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW - timedelta(days=1))
        for i, (status, error) in enumerate(outcomes):
            session.add(Customer(id=i + 1, first_seen_at=at, last_seen_at=at, updated_at=at))
            session.flush()
            session.add(Enrollment(id=f"trial:{i}", journey_id="trial", version=1, customer_id=i + 1,
                                   status="completed", state={}, started_at=at, updated_at=at))
            session.flush()
            session.add(Delivery(key=f"trial:{i}:vip:1", enrollment_id=f"trial:{i}", customer_id=i + 1,
                                 journey_id="trial", version=1, step="vip", channel="log", status=status,
                                 error=error, created_at=at, updated_at=at))
    with any_services.sessions() as session:
        definitions = analytics.definitions_for(session, any_services.deployed, "trial", None)
        stats = analytics.journey_stats(session, "trial", definitions,
                                        analytics.Window(NOW - timedelta(days=1), NOW), NOW)
    vip = next(s for s in stats["steps"] if s["id"] == "vip")
    assert (vip["deliveries"], vip["held"]) == (
        {"sent": 2, "failed": 1, "held": 3}, {"frequency cap": 2, "suppressed": 1})
