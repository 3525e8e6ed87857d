"""Plans and deploys: versions, step diffs, and the enrollments a change would strand."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from engine import deploy
from engine.cli import main
from engine.storage.models import Customer, Enrollment, JourneyRecord, JourneyVersion

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
SHIPPED = Path(__file__).resolve().parents[2] / "journeys"


@pytest.fixture
def journeys_dir(tmp_path: Path) -> Path:
    target = tmp_path / "journeys"
    shutil.copytree(SHIPPED, target)
    return target


def add_enrollment(services, journey_id: str, step: str, number: int) -> None:  # type: ignore[no-untyped-def]
    with services.sessions.begin() as session:
        customer = Customer(traits={}, first_seen_at=NOW, last_seen_at=NOW, updated_at=NOW)
        session.add(customer)
        session.flush()
        session.add(
            Enrollment(
                id=f"e{number}", journey_id=journey_id, version=1, customer_id=customer.id, status="active",
                step=step, state={}, started_at=NOW, updated_at=NOW,
            )
        )


def test_first_deploy_creates_version_1_of_each(services, journeys_dir):
    snapshots = [deploy.snapshot(p) for p in sorted(journeys_dir.glob("*.yaml"))]
    with services.sessions.begin() as session:
        changes = deploy.deploy(session, snapshots, NOW)
    assert {c.kind for c in changes} == {"new"}
    with services.sessions() as session:
        versions = session.execute(select(JourneyVersion.journey_id, JourneyVersion.version)).all()
    assert sorted(versions) == sorted((s.id, 1) for s in snapshots)
    # the templates a journey uses are part of its version
    cart = next(s for s in snapshots if s.id == "cart_abandonment")
    assert set(cart.templates) >= {"cart_reminder.subject.j2", "cart_reminder.text.j2"}


def test_plan_shows_changed_and_removed_steps_and_who_waits_there(services, journeys_dir):
    path = journeys_dir / "cart_abandonment.yaml"
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW)
    add_enrollment(services, "cart_abandonment", "bought", 1)
    add_enrollment(services, "cart_abandonment", "bought", 2)
    add_enrollment(services, "cart_abandonment", "wait_for_order", 3)
    add_enrollment(services, "cart_abandonment", "wait_1h", 4)
    # Given an edit: the wait before the reminder changes, and the final wait goes away
    text = path.read_text()
    text = text.replace("    wait: 1h\n", "    wait: 2h\n")
    text = text.replace(
        "  - id: wait_for_order\n    wait_until: {event: order_completed, timeout: 7d}\n", ""
    )
    path.write_text(text)
    (journeys_dir / "templates" / "cart_reminder.subject.j2").write_text("Still thinking it over, {{ customer.first_name }}?\n")
    with services.sessions() as session:
        (change,) = deploy.plan(session, [deploy.snapshot(path)])
    assert change.kind == "changed" and (change.from_version, change.to_version) == (1, 2)
    assert change.removed == ["wait_for_order"]
    assert change.changed == ["wait_1h", "reminder"]  # reminder: its template changed
    assert change.running == 4
    assert change.waiting == {"wait_for_order": 1, "wait_1h": 1}
    lines = "\n".join(change.describe())
    assert "4 enrollments running stay on version 1" in lines
    assert "1 of them wait at step 'wait_for_order', which version 2 removed" in lines


def test_deploy_keeps_running_enrollments_on_their_version(services, journeys_dir):
    path = journeys_dir / "winback.yaml"
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW)
    add_enrollment(services, "winback", "sixty_days", 1)
    path.write_text(path.read_text().replace("name:", "name: New", 1))
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW)
    with services.sessions() as session:
        assert session.get(JourneyRecord, "winback").current_version == 2
        assert session.execute(select(Enrollment.version)).scalar_one() == 1
        again = deploy.plan(session, [deploy.snapshot(path)])
    assert again[0].kind == "unchanged"


def test_deployed_version_compiles_from_the_database_alone(services, journeys_dir, tmp_path):
    path = journeys_dir / "order_followup.yaml"
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW)
    shutil.rmtree(journeys_dir)  # the files are gone; the version is not
    with services.sessions() as session:
        version = session.execute(select(JourneyVersion)).scalar_one()
    journey = deploy.compile_version(version.journey_id, version.version, version.source, version.templates, tmp_path / "cache")
    assert journey.id == "order_followup"


def test_pause_resume_archive(services, journeys_dir):
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(journeys_dir / "winback.yaml")], NOW)
        assert deploy.set_status(session, "winback", "paused", NOW).status == "paused"
        with pytest.raises(KeyError):
            deploy.set_status(session, "nope", "paused", NOW)
        with pytest.raises(ValueError, match="unknown status 'stopped'"):
            deploy.set_status(session, "winback", "stopped", NOW)


def test_cli_refuses_to_deploy_an_invalid_journey(services, journeys_dir, sqlite_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    (journeys_dir / "broken.yaml").write_text("id: broken\nname: x\nstage: nowhere\ntrigger: {event: a}\nsteps: []\n")
    result = CliRunner().invoke(main, ["deploy", str(journeys_dir)])
    assert result.exit_code == 1
    assert "nothing deployed; fix these first" in result.output
    assert "broken.yaml is invalid" in result.output
    with services.sessions() as session:
        assert session.execute(select(JourneyVersion)).first() is None


def test_plan_shows_the_old_and_new_value_of_each_changed_field(services, journeys_dir):
    path = journeys_dir / "cart_abandonment.yaml"
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW)
    # Given an edit of a wait, a timeout, the trigger's condition and the quiet hours
    text = path.read_text()
    text = text.replace("    wait: 1h\n", "    wait: 2h\n")
    text = text.replace("      timeout: 24h\n", "      timeout: 12h\n")
    text = text.replace("  when: event.properties.cart_value > 0\n", "  when: event.properties.cart_value > 10\n")
    text = text.replace('quiet_hours: {start: "21:00"', 'quiet_hours: {start: "22:00"')
    path.write_text(text)

    with services.sessions() as session:
        (change,) = deploy.plan(session, [deploy.snapshot(path)])

    assert change.describe() == [
        "~ cart_abandonment: version 1 -> 2",
        "    steps changed:",
        "      wait_1h: wait 1h → 2h",
        "      bought: wait_until.timeout 24h → 12h",
        "    trigger: when event.properties.cart_value > 0 → event.properties.cart_value > 10",
        "    policy: quiet_hours.start 21:00 → 22:00",
        "    goal unchanged",
        "    0 enrollments running stay on version 1",
    ]


def test_plan_says_when_trigger_goal_and_policy_are_unchanged(services, journeys_dir):
    path = journeys_dir / "winback.yaml"
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(path)], NOW)
    path.write_text(path.read_text().replace("name:", "name: New", 1))

    with services.sessions() as session:
        (change,) = deploy.plan(session, [deploy.snapshot(path)])

    assert change.describe()[1:3] == [
        "    name: Win back lapsed customers → New Win back lapsed customers",
        "    trigger, goal and policy unchanged",
    ]


def test_planning_one_file_is_quiet_about_the_other_deployed_journeys_unless_asked(
    services, journeys_dir, sqlite_url, monkeypatch
):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    runner = CliRunner()
    assert runner.invoke(main, ["deploy", str(journeys_dir)]).exit_code == 0
    one = str(journeys_dir / "winback.yaml")

    quiet = runner.invoke(main, ["plan", one])
    everything = runner.invoke(main, ["plan", "--all", one])

    others = len(list(journeys_dir.glob("*.yaml"))) - 1
    assert quiet.output == (
        "= winback: unchanged (version 1)\n"
        f"({others} other deployed journeys are not in these files and left as they are; --all lists them)\n"
    )
    assert everything.output.count("but not in these files; left as it is\n") == others
