"""The admin API of the suppression list and consents, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx2
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from engine.api import create_app
from engine.policy import subscribed, suppression
from engine.services import Services
from engine.storage.models import AnonymousId, Consent, Customer, Suppression
from tests.conftest import create_key
from tests.unit.test_policy import NOON, add_deliveries, deliverer, make_world

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@dataclass
class Api:
    """A client on the API, the services behind it, an admin key's headers and Ada's customer id."""

    client: TestClient
    services: Services
    admin: dict[str, str]
    ada: int

    def entries(self) -> list[tuple[str, str | None, int | None, str]]:
        with self.services.sessions() as session:
            rows = session.execute(
                select(Suppression.channel, Suppression.address, Suppression.customer_id, Suppression.reason)
                .order_by(Suppression.id)
            ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]


def add_customer(services: Services, user_id: str | None, traits: dict[str, object],
                 anonymous_id: str | None = None) -> int:
    with services.sessions.begin() as session:
        customer = Customer(external_id=user_id, traits=traits, first_seen_at=NOW, last_seen_at=NOW, updated_at=NOW)
        session.add(customer)
        session.flush()
        if anonymous_id is not None:
            session.add(AnonymousId(anonymous_id=anonymous_id, customer_id=customer.id, created_at=NOW))
        return customer.id


@pytest.fixture
def api(any_services: Services) -> Iterator[Api]:
    ada = add_customer(any_services, "ada", {"email": "Ada@Example.com", "phone": "+14155550123"}, "anon-ada")
    with TestClient(create_app(any_services)) as client:
        yield Api(client, any_services, basic(create_key(any_services, "ops", admin=True)), ada)


def problems(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == "invalid_request"
    assert body["message"].startswith(f"{len(body['errors'])} problem")
    return {error["path"]: error["message"] for error in body["errors"]}


ENDPOINTS = [
    ("POST", "/v1/suppressions", {"channel": "email", "address": "ada@example.com", "reason": "manual"}),
    ("GET", "/v1/suppressions", None),
    ("DELETE", "/v1/suppressions/email/ada@example.com", None),
    ("DELETE", "/v1/suppressions/email?userId=ada", None),
    ("GET", "/v1/customers/ada/consents", None),
    ("PUT", "/v1/customers/ada/consents", {"channel": "email", "subscribed": False}),
]


class TestAuth:
    @pytest.mark.parametrize("method, path, body", ENDPOINTS)
    def test_no_key_or_a_wrong_key_is_401(self, client, services, method, path, body):  # type: ignore[no-untyped-def]
        for headers in ({}, basic("je_admin_not-a-key")):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Basic")
            assert response.json()["code"] == "unauthorized"

    @pytest.mark.parametrize("method, path, body", ENDPOINTS)
    def test_a_write_key_is_403_and_changes_nothing(self, client, services, write_key, method, path, body):  # type: ignore[no-untyped-def]
        add_customer(services, "ada", {"email": "ada@example.com"})
        response = client.request(method, path, json=body, headers=basic(write_key))
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden" and "admin key" in response.json()["message"]
        with services.sessions() as session:
            assert session.execute(select(func.count()).select_from(Suppression)).scalar_one() == 0
            assert session.execute(select(func.count()).select_from(Consent)).scalar_one() == 0

    def test_a_bad_body_without_a_key_is_still_401(self, client):  # type: ignore[no-untyped-def]
        assert client.post("/v1/suppressions", content=b"{").status_code == 401


class TestAdd:
    def test_an_address_is_added_once_whatever_its_case(self, api: Api) -> None:
        body = {"channel": "email", "address": "Ada@Example.com", "reason": "complaint", "note": "ticket 42"}
        first = api.client.post("/v1/suppressions", json=body, headers=api.admin)
        assert first.status_code == 201
        entry = first.json()
        assert {k: entry[k] for k in ("channel", "address", "userId", "reason", "note")} == {
            "channel": "email", "address": "ada@example.com", "userId": None, "reason": "complaint", "note": "ticket 42"}
        again = api.client.post("/v1/suppressions", json={**body, "address": " ADA@example.COM ", "reason": "manual"},
                                headers=api.admin)
        assert again.status_code == 200 and again.json() == entry  # the first entry stays as it was
        assert api.entries() == [("email", "ada@example.com", None, "complaint")]
        with api.services.sessions() as session:
            ada = session.get(Customer, api.ada)
            assert suppression(session, "email", ada) is not None  # the policy holds her email now
            assert suppression(session, "sms", ada) is None

    def test_a_customer_by_user_id_or_anonymous_id(self, api: Api) -> None:
        body = {"channel": "*", "userId": "ada", "reason": "manual"}
        first = api.client.post("/v1/suppressions", json=body, headers=api.admin)
        assert first.status_code == 201
        assert (first.json()["userId"], first.json()["address"]) == ("ada", None)
        again = api.client.post("/v1/suppressions", json={**body, "userId": "anon-ada"}, headers=api.admin)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert api.entries() == [("*", None, api.ada, "manual")]
        with api.services.sessions() as session:
            assert suppression(session, "push", session.get(Customer, api.ada)) is not None

    def test_an_unknown_customer_is_404(self, api: Api) -> None:
        response = api.client.post("/v1/suppressions", json={"channel": "email", "userId": "bob", "reason": "manual"},
                                   headers=api.admin)
        assert response.status_code == 404
        assert response.json() == {"success": False, "code": "not_found",
                                    "message": "no customer is known by the user id or anonymous id 'bob'"}
        assert api.entries() == []

    @pytest.mark.parametrize("body, expected", [
        ({}, {"channel": "is required: the channel's name (installed:",
              "reason": "is required: one of hard_bounce, complaint, manual",
              "address": "is required: the address to suppress, or else a userId"}),
        ({"channel": "emial", "address": "ada@example.com", "reason": "hard-bounce", "adress": "x"},
         {"channel": "unknown channel 'emial'. Did you mean 'email'? (installed: email,",
          "reason": "unknown reason 'hard-bounce'. Did you mean 'hard_bounce'? (use one of hard_bounce, complaint, manual)",
          "adress": "unknown field 'adress'. Did you mean 'address'? (the fields are channel, address, userId, reason, note)"}),
        ({"channel": 5, "address": "ada@example.com", "reason": "bored"},
         {"channel": "unknown channel value 5 (installed:", "reason": "unknown reason 'bored' (use one of"}),
        ({"channel": "email", "address": "ada.example.com", "reason": "manual"},
         {"address": "'ada.example.com' is not an email address; write it like ada@example.com"}),
        ({"channel": "sms", "address": "(415) 555-0123", "reason": "manual"},
         {"address": "'(415) 555-0123' is not a phone number in E.164 form; write it like +14155550123"}),
        ({"channel": "push", "address": "token with spaces", "reason": "manual"},
         {"address": "'token with spaces' has spaces; a push token has none"}),
        ({"channel": "webhook", "address": "https://hooks.example", "reason": "manual"},
         {"address": "the webhook channel sends to no address of its own; suppress the customer with a userId"}),
        ({"channel": "email", "address": "ada@example.com", "userId": "ada", "reason": "manual"},
         {"userId": "give an address or a userId, not both"}),
        ({"channel": "email", "address": "", "reason": "manual", "note": "x" * 1001},
         {"address": "must be a non-empty string, not ''", "note": "is 1001 characters long; at most 1000 are allowed"}),
    ])
    def test_bad_input_is_400_naming_every_field(self, api: Api, body: dict[str, object],
                                                 expected: dict[str, str]) -> None:
        found = problems(api.client.post("/v1/suppressions", json=body, headers=api.admin))
        assert set(found) == set(expected)
        for path, start in expected.items():
            assert found[path].startswith(start), found[path]
        assert api.entries() == []

    @pytest.mark.parametrize("content, message", [
        (b'{"channel": "email",', "is not valid JSON"),
        (b'["email"]', 'must be a JSON object such as {"channel": "email"'),
    ])
    def test_a_body_that_is_not_an_object(self, api: Api, content: bytes, message: str) -> None:
        found = problems(api.client.post("/v1/suppressions", content=content, headers=api.admin))
        assert list(found) == ["body"] and message in found["body"]

    def test_concurrent_adds_of_one_address_make_one_entry(self, api: Api) -> None:
        app = api.client.app

        async def main() -> list[int]:
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://engine") as http:
                body = {"channel": "email", "address": "ada@example.com", "reason": "hard_bounce"}
                responses = await asyncio.gather(
                    *(http.post("/v1/suppressions", json=body, headers=api.admin) for _ in range(20)))
            return sorted(r.status_code for r in responses)

        assert asyncio.run(main()) == [200] * 19 + [201]
        assert api.entries() == [("email", "ada@example.com", None, "hard_bounce")]


class TestList:
    def add(self, api: Api, *addresses: str, channel: str = "email") -> None:
        for address in addresses:
            response = api.client.post("/v1/suppressions", json={"channel": channel, "address": address,
                                                                  "reason": "manual"}, headers=api.admin)
            assert response.status_code == 201

    def test_pages_newest_first_until_the_last(self, api: Api) -> None:
        self.add(api, *(f"u{i}@example.com" for i in range(5)))
        seen, cursor, pages = [], None, 0
        while True:
            query = "/v1/suppressions?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = api.client.get(query, headers=api.admin)
            assert page.status_code == 200
            seen += [entry["address"] for entry in page.json()["suppressions"]]
            pages += 1
            cursor = page.json()["nextCursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == [f"u{i}@example.com" for i in reversed(range(5))]

    def test_filters_by_channel_and_address(self, api: Api) -> None:
        self.add(api, "ada@example.com", "bob@example.com")
        self.add(api, "+14155550123", channel="sms")
        self.add(api, "ada@example.com", channel="*")
        by_channel = api.client.get("/v1/suppressions?channel=sms", headers=api.admin).json()
        assert [e["address"] for e in by_channel["suppressions"]] == ["+14155550123"]
        assert by_channel["nextCursor"] is None
        by_address = api.client.get("/v1/suppressions", params={"address": "ADA@example.com"}, headers=api.admin)
        assert [e["channel"] for e in by_address.json()["suppressions"]] == ["*", "email"]
        both = api.client.get("/v1/suppressions", params={"address": "ada@example.com", "channel": "*"},
                              headers=api.admin)
        assert [e["channel"] for e in both.json()["suppressions"]] == ["*"]
        everything = api.client.get("/v1/suppressions", headers=api.admin).json()["suppressions"]
        assert len(everything) == 4

    def test_bad_parameters_are_400(self, api: Api) -> None:
        found = problems(api.client.get("/v1/suppressions?limit=0&cursor=abc&chanel=email", headers=api.admin))
        assert found == {
            "chanel": "unknown parameter 'chanel'. Did you mean 'channel'? (the parameters are channel, address, limit, cursor)",
            "limit": "must be the entries per page, 1 to 1000, not '0'",
            "cursor": "'abc' is not a cursor this list gave; pass the nextCursor of the previous page",
        }
        assert set(problems(api.client.get("/v1/suppressions?limit=1001", headers=api.admin))) == {"limit"}
        assert set(problems(api.client.get("/v1/suppressions?limit=ten", headers=api.admin))) == {"limit"}
        assert problems(api.client.get("/v1/suppressions?channel=mail", headers=api.admin))["channel"].startswith(
            "unknown channel 'mail'")


class TestLift:
    def test_an_address_is_lifted_then_404(self, api: Api) -> None:
        api.client.post("/v1/suppressions", json={"channel": "email", "address": "ada@example.com",
                                                  "reason": "hard_bounce"}, headers=api.admin)
        lifted = api.client.delete("/v1/suppressions/email/ADA@example.com", headers=api.admin)
        assert lifted.status_code == 200
        assert (lifted.json()["address"], lifted.json()["reason"]) == ("ada@example.com", "hard_bounce")
        assert api.entries() == []
        with api.services.sessions() as session:
            assert suppression(session, "email", session.get(Customer, api.ada)) is None
        again = api.client.delete("/v1/suppressions/email/ada@example.com", headers=api.admin)
        assert again.status_code == 404
        assert again.json()["message"] == "the address 'ada@example.com' is not on the suppression list of channel 'email'"

    def test_a_phone_and_the_every_channel_entry(self, api: Api) -> None:
        for channel, address in (("sms", "+14155550123"), ("*", "ada@example.com")):
            api.client.post("/v1/suppressions", json={"channel": channel, "address": address, "reason": "manual"},
                            headers=api.admin)
        assert api.client.delete("/v1/suppressions/sms/+14155550123", headers=api.admin).status_code == 200
        assert api.client.delete("/v1/suppressions/email/ada@example.com", headers=api.admin).status_code == 404
        assert api.client.delete("/v1/suppressions/*/ada@example.com", headers=api.admin).status_code == 200
        assert api.entries() == []

    def test_a_customer_entry_by_user_id(self, api: Api) -> None:
        api.client.post("/v1/suppressions", json={"channel": "email", "userId": "ada", "reason": "manual"},
                        headers=api.admin)
        assert api.client.delete("/v1/suppressions/sms?userId=ada", headers=api.admin).status_code == 404
        lifted = api.client.delete("/v1/suppressions/email?userId=ada", headers=api.admin)
        assert lifted.status_code == 200 and lifted.json()["userId"] == "ada"
        assert api.entries() == []
        unknown = api.client.delete("/v1/suppressions/email?userId=bob", headers=api.admin)
        assert unknown.status_code == 404 and "'bob'" in unknown.json()["message"]

    def test_bad_input_is_400(self, api: Api) -> None:
        assert problems(api.client.delete("/v1/suppressions/emial/ada@example.com", headers=api.admin)) == {
            "channel": "unknown channel 'emial'. Did you mean 'email'? (installed: email, log, push, retargeting, "
                       "sms, webhook; * for every channel)"}
        assert problems(api.client.delete("/v1/suppressions/email", headers=api.admin)) == {
            "query.userId": "is required: add ?userId= to the URL"}


class TestConsents:
    def test_record_and_show_choices(self, api: Api) -> None:
        assert api.client.get("/v1/customers/ada/consents", headers=api.admin).json() == {
            "id": api.ada, "userId": "ada", "consents": []}
        put = api.client.put("/v1/customers/ada/consents", json={"channel": "email", "subscribed": False},
                             headers=api.admin)
        assert put.status_code == 200
        assert {k: v for k, v in put.json().items() if k != "at"} == {
            "channel": "email", "topic": "*", "subscribed": False, "source": "admin API, key ops"}
        api.client.put("/v1/customers/anon-ada/consents", headers=api.admin,
                       json={"channel": "email", "topic": "surveys", "subscribed": True, "source": "preference centre"})
        shown = api.client.get("/v1/customers/anon-ada/consents", headers=api.admin).json()
        assert [(c["topic"], c["subscribed"], c["source"]) for c in shown["consents"]] == [
            ("*", False, "admin API, key ops"), ("surveys", True, "preference centre")]
        with api.services.sessions() as session:
            assert not subscribed(session, api.ada, "email", "news")
            assert subscribed(session, api.ada, "email", "surveys")  # the topic's own choice wins

    def test_a_choice_replaces_the_previous_one(self, api: Api) -> None:
        for choice in (False, True):
            api.client.put("/v1/customers/ada/consents", json={"channel": "sms", "subscribed": choice},
                           headers=api.admin)
        consents = api.client.get("/v1/customers/ada/consents", headers=api.admin).json()["consents"]
        assert [(c["channel"], c["subscribed"]) for c in consents] == [("sms", True)]

    def test_an_unknown_customer_is_404(self, api: Api) -> None:
        for response in (api.client.get("/v1/customers/bob/consents", headers=api.admin),
                         api.client.put("/v1/customers/bob/consents", json={"channel": "email", "subscribed": False},
                                        headers=api.admin)):
            assert response.status_code == 404
            assert response.json()["message"] == "no customer is known by the user id or anonymous id 'bob'"

    @pytest.mark.parametrize("body, expected", [
        ({"channel": "email"}, {"subscribed": "is required: true to subscribe, false to unsubscribe"}),
        ({"channel": "email", "subscribed": "no"}, {"subscribed": "must be true or false, not 'no'"}),
        ({"channel": "*", "subscribed": False}, {"channel": "a consent is per channel: name one (installed: email,"}),
        ({"channel": "emali", "subscribed": False, "topic": "t" * 101},
         {"channel": "unknown channel 'emali'. Did you mean 'email'?",
          "topic": "is 101 characters long; at most 100 are allowed"}),
        ({"subscribed": True, "subscribe": True},
         {"channel": "is required", "subscribe": "unknown field 'subscribe'. Did you mean 'subscribed'?"}),
    ])
    def test_bad_input_is_400(self, api: Api, body: dict[str, object], expected: dict[str, str]) -> None:
        found = problems(api.client.put("/v1/customers/ada/consents", json=body, headers=api.admin))
        assert set(found) == set(expected)
        for path, start in expected.items():
            assert found[path].startswith(start), found[path]
        assert api.client.get("/v1/customers/ada/consents", headers=api.admin).json()["consents"] == []


def test_what_the_api_records_holds_sends_back_and_a_lift_lets_them_go(any_services: Services) -> None:
    # Given Ada, a deployed journey and a stub email adapter
    services, customer_id, stub = make_world(any_services, "UTC")
    with TestClient(create_app(services)) as client:
        admin = basic(create_key(services, "ops", admin=True))
        # When the API unsubscribes her from surveys, a marketing survey is held
        client.put("/v1/customers/ada/consents", json={"channel": "email", "topic": "surveys", "subscribed": False},
                   headers=admin)
        [survey] = add_deliveries(services, customer_id)
        assert deliverer(services).deliver(survey, NOON).error == "unsubscribed from email topic surveys"
        # and once her address is suppressed, a transactional email is held too
        client.post("/v1/suppressions", json={"channel": "email", "address": "ada@example.com", "reason": "manual"},
                    headers=admin)
        [receipt] = add_deliveries(services, customer_id, kind="transactional")
        assert deliverer(services).deliver(receipt, NOON).error == "suppressed: manual on email"
        # Then lifting the entry lets the next one go
        client.delete("/v1/suppressions/email/ada@example.com", headers=admin)
        [second] = add_deliveries(services, customer_id, kind="transactional")
        assert deliverer(services).deliver(second, NOON).status == "sent"
    assert [m.recipient.email for m in stub.sent] == ["Ada@Example.com"]
