"""Customer profiles: identity resolution, trait merges, anonymous-to-known merges, stages.

These run on SQLite and on PostgreSQL (``any_services``), through the API and the
events actor, as an app would drive them.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from engine import profiles
from engine.api import create_app
from engine.storage.models import Customer, Event, StageChange
from tests.conftest import create_key, drain


@pytest.fixture
def api(any_services):  # type: ignore[no-untyped-def]
    key = create_key(any_services)
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    with TestClient(create_app(any_services)) as client:

        def send(type_: str, **body: object) -> None:
            response = client.post(f"/v1/{type_}", json=body, headers=auth)
            assert response.status_code == 200, response.text

        yield send


def live_customers(services):  # type: ignore[no-untyped-def]
    with services.sessions() as session:
        return list(session.execute(select(Customer).where(Customer.merged_into_id.is_(None))).scalars())


def view(services, ident):  # type: ignore[no-untyped-def]
    from engine.api.views import customer_view

    with services.sessions() as session:
        return customer_view(session, ident)


def test_identify_merges_traits(any_services, api):
    api("identify", userId="u1", traits={"name": "Ada", "plan": "free"})
    api("identify", userId="u1", traits={"plan": "pro", "city": "London"})
    drain(any_services)
    assert view(any_services, "u1")["traits"] == {"name": "Ada", "plan": "pro", "city": "London"}


def test_anonymous_history_merges_into_the_known_customer(any_services, api):
    # Given a visitor browsing anonymously, who is also known on another device
    api("page", anonymousId="anon-1", name="Pricing")
    api("track", anonymousId="anon-1", event="Product Viewed", properties={"sku": "A"})
    api("identify", anonymousId="anon-1", traits={"referrer": "ad"})
    api("identify", userId="u1", traits={"email": "ada@example.com"})
    drain(any_services)
    assert len(live_customers(any_services)) == 2
    # When they log in on the first device
    api("identify", userId="u1", anonymousId="anon-1", traits={"name": "Ada"})
    drain(any_services)
    # Then there is one customer with the whole history and both sets of traits
    (customer,) = live_customers(any_services)
    profile = view(any_services, "u1")
    assert profile["anonymousIds"] == ["anon-1"]
    assert profile["traits"] == {"referrer": "ad", "email": "ada@example.com", "name": "Ada"}
    assert sorted(e["type"] for e in profile["events"]) == ["identify", "identify", "identify", "page", "track"]
    assert view(any_services, "anon-1")["userId"] == "u1"


def test_anonymous_visitor_becomes_known_without_a_second_profile(any_services, api):
    api("track", anonymousId="anon-2", event="Cart Viewed")
    api("identify", userId="u2", anonymousId="anon-2", traits={"name": "Grace"})
    api("track", userId="u2", event="Order Completed")
    drain(any_services)
    (customer,) = live_customers(any_services)
    assert customer.external_id == "u2"
    assert len(view(any_services, "u2")["events"]) == 3


def test_alias_merges_the_previous_id(any_services, api):
    api("track", userId="old-id", event="Signed Up")
    api("identify", userId="new-id", traits={"tier": "gold"})
    drain(any_services)
    api("alias", userId="new-id", previousId="old-id")
    api("track", userId="old-id", event="Late Event")
    drain(any_services)
    (customer,) = live_customers(any_services)
    assert customer.external_id == "new-id"
    events = {e["type"] + ":" + (e["event"] or "") for e in view(any_services, "new-id")["events"]}
    assert events == {"track:Signed Up", "identify:", "alias:", "track:Late Event"}


def test_alias_of_an_unknown_id_links_it(any_services, api):
    api("alias", userId="u3", previousId="device-9")
    api("track", anonymousId="device-9", event="Opened App")
    drain(any_services)
    assert len(live_customers(any_services)) == 1
    assert view(any_services, "device-9")["userId"] == "u3"


def test_time_zone_from_traits_or_context(any_services, api):
    api("track", userId="u4", event="x", context={"timezone": "Europe/Paris"})
    api("identify", userId="u5", traits={"timezone": "America/New_York"}, context={"timezone": "Europe/Paris"})
    api("identify", userId="u6", traits={"timezone": "Mars/Olympus"})
    drain(any_services)
    assert view(any_services, "u4")["timezone"] == "Europe/Paris"
    assert view(any_services, "u5")["timezone"] == "America/New_York"
    assert view(any_services, "u6")["timezone"] is None


def test_processing_an_event_twice_changes_nothing(any_services, api):
    api("identify", userId="u7", traits={"visits": 1})
    drain(any_services)
    with any_services.sessions() as session:
        event_id = session.execute(select(Event.id)).scalar_one()
    any_services.actors.process_events.send([event_id])
    drain(any_services)
    assert len(live_customers(any_services)) == 1
    with any_services.sessions() as session:
        assert session.execute(select(func.count()).select_from(Event)).scalar_one() == 1


def test_stage_moves_are_kept_as_history(any_services, api):
    api("identify", userId="u8")
    drain(any_services)
    t1 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    t2 = datetime(2030, 2, 1, tzinfo=timezone.utc)
    with any_services.sessions.begin() as session:
        customer = profiles.find(session, "u8")
        assert profiles.set_stage(session, customer, "consideration", t1, "journey cart_abandonment")
        assert profiles.set_stage(session, customer, "purchase", t2, "journey order_thanks")
        assert not profiles.set_stage(session, customer, "purchase", t2, "again")
        with pytest.raises(ValueError, match="unknown stage 'buying'"):
            profiles.set_stage(session, customer, "buying", t2, "typo")
    profile = view(any_services, "u8")
    assert profile["stage"] == "purchase"
    assert [(h["from"], h["to"]) for h in profile["stageHistory"]] == [(None, "consideration"), ("consideration", "purchase")]
    with any_services.sessions() as session:
        assert session.execute(select(func.count()).select_from(StageChange)).scalar_one() == 2


def test_an_older_identify_applied_late_does_not_undo_a_newer_one(any_services, api):
    # Workers apply events in parallel, and phones send what they queued offline late:
    # the newer identify may be applied first.
    api("identify", userId="u1", traits={"plan": "pro", "city": "London"}, timestamp="2026-11-23T10:05:00Z")
    drain(any_services)
    api("identify", userId="u1", traits={"plan": "free", "name": "Ada"}, timestamp="2026-11-23T10:00:00Z")
    drain(any_services)
    assert view(any_services, "u1")["traits"] == {"plan": "pro", "city": "London", "name": "Ada"}


def test_a_referral_code_trait_is_the_customers_code_unless_someone_has_it(any_services, api):
    from engine.storage.models import ReferralCode

    api("identify", userId="ada", traits={"referral_code": "ADA-7F3K"})
    drain(any_services)
    api("identify", userId="eve", traits={"referral_code": "ADA-7F3K"})  # taken: stays ada's
    drain(any_services)
    api("identify", userId="ada", traits={"referral_code": "ADA-NEW"})  # she has one: kept
    drain(any_services)
    with any_services.sessions() as session:
        codes = session.execute(
            select(Customer.external_id, ReferralCode.code, ReferralCode.program)
            .join(Customer, Customer.id == ReferralCode.customer_id)
        ).all()
    assert codes == [("ada", "ADA-7F3K", "default")]
