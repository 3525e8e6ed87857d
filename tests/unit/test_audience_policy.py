"""Audience sends through the deliverer and the policy: a removal is never held back, and
an add that had not gone out when its enrollment ended never goes out after its removal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import count
from pathlib import Path

import pytest

from channels.stub import StubChannel
from engine import deploy
from engine.delivery import Deliverer
from engine.policy import PolicyLayer, record_consent, suppress
from engine.storage.models import Customer, Delivery, Enrollment

JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"
NIGHT = datetime(2026, 6, 15, 22, 30, tzinfo=timezone.utc)  # in cart_abandonment's quiet hours (21:00-08:00)
_keys = count(1)


@pytest.fixture
def world(any_services):  # type: ignore[no-untyped-def]
    """cart_abandonment deployed, Ada in it, a stub retargeting adapter."""
    with any_services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(JOURNEYS / "cart_abandonment.yaml")], NIGHT)
        ada = Customer(external_id="ada", traits={"email": "ada@example.com"}, timezone="Europe/London",
                       first_seen_at=NIGHT, last_seen_at=NIGHT, updated_at=NIGHT)
        session.add(ada)
        session.flush()
        session.add(Enrollment(id="e-1", journey_id="cart_abandonment", version=1, customer_id=ada.id,
                               status="active", started_at=NIGHT, updated_at=NIGHT))
        customer_id = ada.id
    stub = StubChannel("retargeting")
    any_services.adapters["retargeting"] = stub
    policy = PolicyLayer(any_services.settings, any_services.sessions, any_services.deployed)
    return any_services, customer_id, stub, Deliverer(any_services.sessions, any_services.deployed,
                                                      any_services.adapter, policy)


def audience_send(services, customer_id: int, action: str, created_at: datetime = NIGHT) -> int:  # type: ignore[no-untyped-def]
    step = "retarget" if action == "add" else "leave_audience"
    with services.sessions.begin() as session:
        row = Delivery(key=f"e-1:{step}:{next(_keys)}", enrollment_id="e-1", customer_id=customer_id,
                       journey_id="cart_abandonment", version=1, step=step, channel="retargeting",
                       kind="marketing", topic="cart_reminders",
                       content={"parts": [], "url": None, "audience": "cart_abandoners", "action": action},
                       created_at=created_at, updated_at=created_at)
        session.add(row)
        session.flush()
        return row.id


def test_a_removal_goes_out_in_quiet_hours_unsubscribed_and_suppressed_while_an_add_is_held(world):
    services, customer_id, stub, deliverer = world
    with services.sessions.begin() as session:
        record_consent(session, customer_id, "retargeting", "*", False, "preference centre", NIGHT)
        suppress(session, "*", "manual", NIGHT, customer_id=customer_id)
    add, remove = audience_send(services, customer_id, "add"), audience_send(services, customer_id, "remove")

    outcomes = deliverer.deliver_many([add, remove], NIGHT)

    assert (outcomes[add].status, outcomes[remove].status) == ("held", "sent")
    assert [m.content["action"] for m in stub.sent] == ["remove"]


def test_an_add_not_sent_when_its_enrollment_converted_is_held(world):
    services, customer_id, stub, deliverer = world
    before = audience_send(services, customer_id, "add", created_at=NIGHT - timedelta(hours=1))
    same_moment = audience_send(services, customer_id, "add")  # made by the ending itself (a goal's path)
    with services.sessions.begin() as session:
        enrollment = session.get(Enrollment, "e-1")
        enrollment.status, enrollment.ended_at = "converted", NIGHT

    outcomes = deliverer.deliver_many([before, same_moment], NIGHT + timedelta(hours=11))  # past quiet hours

    assert (outcomes[before].status, outcomes[same_moment].status) == ("held", "sent")
    assert "converted" in (outcomes[before].error or "")
