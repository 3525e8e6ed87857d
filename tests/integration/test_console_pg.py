"""The console on PostgreSQL: sign-in, the overview's per-minute chart (date_trunc), a filtered
page, an action on a filter after its confirmation, audited with the console key."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select, update

from engine.services import Services
from engine.storage.models import AuditEntry, Delivery
from tests.conftest import create_key
from tests.unit.console_helpers import client_for, hooks, sign_in
from tests.unit.test_operator_actions import deliveries_in
from tests.unit.test_policy import make_world


def test_the_console_on_postgresql(pg_services: Services) -> None:
    services, customer_id, _ = make_world(pg_services, "UTC")
    sent = deliveries_in(services, customer_id, "sent", 3, error=None)
    dead = deliveries_in(services, customer_id, "dead", 2)
    now = services.clock()
    with services.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id.in_(sent)).values(sent_at=now - timedelta(minutes=3)))
    client = client_for(services)
    csrf = sign_in(client, create_key(services, "ops", admin=True))

    overview = client.get("/console").text
    bars = [int(c) for c in re.findall(r'data-test="chart-bar" data-count="(\d+)"', overview)]
    assert len(bars) == 60 and sum(bars) == 3 and bars.count(3) == 1

    listed = client.get("/console/deliveries?status=dead&since=2020-01-01T00:00:00Z").text
    assert len(hooks(listed, "delivery-row")) == 2
    assert client.get("/console/deliveries?cursor=nope").status_code == 400

    form = {"csrf": csrf, "scope": "filter", "filter": "status=dead"}
    assert 'data-count="2"' in client.post("/console/deliveries/retry", data=form).text
    assert client.post("/console/deliveries/retry", data={**form, "confirmed": "yes"}).status_code == 303
    with services.sessions() as session:
        assert {d.status for d in session.execute(select(Delivery).where(Delivery.id.in_(dead))).scalars()} == {"pending"}
        [entry] = session.execute(select(AuditEntry)).scalars().all()
    assert (entry.action, entry.acted, entry.actor.endswith("(ops)")) == ("deliveries.retry", 2, True)
    for page in ("/console/journeys/nps_survey", "/console/customers?q=ada", "/console/experiments", "/console/audit"):
        assert client.get(page).status_code == 200, page
