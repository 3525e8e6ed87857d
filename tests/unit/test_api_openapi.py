"""The OpenAPI document, and the answers schemathesis found at odds with it (each now a test).

On SQLite and PostgreSQL (``any_services``): several of these were PostgreSQL's 500s.
tests/integration/test_openapi_fuzz.py runs schemathesis itself against ``journey serve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from engine.api import create_app
from engine.segment import TYPES
from engine.services import Services
from engine.storage.models import Event
from tests.conftest import create_key, drain
from tests.unit.test_api_suppressions import add_customer, basic


@pytest.fixture
def client(any_services: Services) -> Iterator[tuple[TestClient, dict[str, str]]]:
    add_customer(any_services, "ada", {"email": "ada@example.com"}, "anon-ada")
    with TestClient(create_app(any_services)) as test_client:
        yield test_client, basic(create_key(any_services, "ops", admin=True))


def document(services: Services) -> dict[str, Any]:
    with TestClient(create_app(services)) as test_client:
        return test_client.get("/openapi.json").json()


def test_every_ingestion_endpoint_declares_its_body_and_every_error_its_shape(services: Services) -> None:
    paths = document(services)["paths"]
    for type_ in TYPES:
        operation = paths[f"/v1/{type_}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{type_.capitalize()}Message"}
        assert set(operation["responses"]) == {"200", "400", "401", "503"}
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}


@pytest.mark.parametrize(
    ("message", "valid"),
    [
        ({"userId": "u1", "event": "x"}, True),
        ({"anonymousId": "a1", "event": "x"}, True),
        ({"userId": 42, "event": "x"}, True),
        ({"event": "x"}, False),  # neither userId nor anonymousId
        ({"userId": " ", "event": "x"}, False),  # blank counts as absent
        ({"userId": None, "anonymousId": "a1", "event": "x"}, True),
        ({"userId": "u1"}, False),  # a track needs its event
        ({"userId": "u" * 256, "event": "x"}, False),
    ],
)
def test_the_track_schema_states_the_either_or_of_user_id_and_anonymous_id(services: Services, message: dict[str, object],
                                                                            valid: bool) -> None:
    schema = {"$ref": "#/components/schemas/TrackMessage", **document(services)}
    assert jsonschema.Draft202012Validator(schema).is_valid(message) is valid


def test_a_405_allows_every_method_of_the_path(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, _ = client
    answer = test_client.request("PATCH", "/v1/suppressions")
    assert (answer.status_code, answer.headers["allow"]) == (405, "GET, POST")


def test_a_time_zone_offset_beyond_postgresqls_is_stored_in_utc(client: tuple[TestClient, dict[str, str]],
                                                               any_services: Services) -> None:
    test_client, admin = client
    answer = test_client.post("/v1/track", headers=admin, json={
        "userId": "u1", "event": "x", "originalTimestamp": "2026-11-23T23:30:00+21:30"})
    assert answer.status_code == 200, answer.text
    with any_services.sessions() as session:
        stored = session.execute(select(Event.original_timestamp)).scalar_one()
    assert stored.replace(tzinfo=stored.tzinfo or timezone.utc) == datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


def test_a_time_before_year_one_in_utc_is_the_first_storable_moment(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, admin = client
    answer = test_client.post("/v1/track", headers=admin, json={
        "userId": "u1", "event": "x", "originalTimestamp": "0001-01-01T00:00:00+01:00",
        "sentAt": "9999-12-31T23:59:59-01:00"})
    assert answer.status_code == 200, answer.text


def test_an_id_sent_as_a_whole_float_is_that_number(client: tuple[TestClient, dict[str, str]],
                                                    any_services: Services) -> None:
    test_client, admin = client
    answer = test_client.post("/v1/track", headers=admin, content=b'{"userId": 42.0, "event": "x"}')
    assert answer.status_code == 200, answer.text
    with any_services.sessions() as session:
        assert session.execute(select(Event.user_id)).scalar_one() == "42"


def test_a_number_beyond_64_bits_in_properties_reads_back(client: tuple[TestClient, dict[str, str]],
                                                          any_services: Services) -> None:
    test_client, admin = client
    sent = test_client.post("/v1/track", headers=admin,
                            content=b'{"anonymousId": "anon-ada", "event": "x", "properties": {"n": 1e30}}')
    assert sent.status_code == 200, sent.text
    drain(any_services)  # the worker's part: the event joins ada's profile, which shows it
    answer = test_client.get("/v1/customers/anon-ada", headers=admin)
    assert (answer.status_code, answer.json()["events"][0]["properties"]) == (200, {"n": 1e30})


def test_a_nul_in_a_customer_id_is_a_400_naming_it(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, admin = client
    answer = test_client.get("/v1/customers/a%00b/consents", headers=admin)
    assert (answer.status_code, answer.json()["errors"]) == (400, [
        {"path": "path.ident", "message": "contains a NUL character (%00), which cannot be looked up; remove it"}])


def test_a_cursor_beyond_a_bigint_is_a_400(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, admin = client
    answer = test_client.get("/v1/deliveries?cursor=99999999999999999999", headers=admin)
    assert (answer.status_code, [e["path"] for e in answer.json()["errors"]]) == (400, ["cursor"])


def test_a_delivery_id_beyond_a_bigint_is_a_400(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, admin = client
    answer = test_client.post("/v1/deliveries/mark-sent", headers=admin, json={"ids": [2**63]})
    assert (answer.status_code, [e["path"] for e in answer.json()["errors"]]) == (400, ["body.ids.0"])


def test_a_nul_in_a_suppression_note_is_a_400_naming_it(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, admin = client
    answer = test_client.post("/v1/suppressions", headers=admin, json={
        "channel": "email", "address": "ada@example.com", "reason": "manual", "note": "a\u0000b"})
    assert (answer.status_code, [e["path"] for e in answer.json()["errors"]]) == (400, ["note"])


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"ids": [1, 2]}, True),
        ({"filter": {"status": "dead", "channel": "email"}}, True),
        ({"all": True}, True),
        ({"ids": [1], "filter": None, "all": None}, True),  # null is absent
        ({"ids": [1], "all": True}, False),  # exactly one of them
        ({"filter": {}, "all": True}, False),
        ({}, False),
        ({"ids": []}, False),
        ({"ids": [0]}, False),
        ({"ids": ["1"]}, False),
        ({"all": 1}, False),
        ({"filter": {"channel": " "}}, False),  # a blank filter: leave it out
        ({"filter": {"channel": "a\u0000b"}}, False),
        ({"filter": {"since": 0}}, False),
    ],
)
def test_a_delivery_actions_schema_and_its_model_accept_the_same_bodies(
        client: tuple[TestClient, dict[str, str]], services: Services, body: dict[str, object], valid: bool) -> None:
    schema = {"$ref": "#/components/schemas/DeliveryAction", **document(services)}
    test_client, admin = client
    answer = test_client.post("/v1/deliveries/mark-sent", headers=admin, json=body)
    assert (jsonschema.Draft202012Validator(schema).is_valid(body), answer.status_code != 400) == (valid, valid)


def test_an_events_action_with_ids_and_a_filter_is_invalid_in_its_schema(services: Services) -> None:
    schema = {"$ref": "#/components/schemas/EventAction", **document(services)}
    assert not jsonschema.Draft202012Validator(schema).is_valid({"ids": [1], "filter": {"name": "x"}})


@pytest.mark.parametrize("route", ["/v1/deliveries", "/v1/events/failed", "/v1/audit"])
def test_a_listings_cursor_is_documented_as_the_whole_number_it_must_be(services: Services, route: str) -> None:
    parameters = document(services)["paths"][route]["get"]["parameters"]
    assert next(p["schema"] for p in parameters if p["name"] == "cursor")["type"] == "integer"


@pytest.mark.parametrize("path", ["/v1/deliveries?channel=a%00b", "/v1/deliveries?reason=%20",
                                  "/v1/events/failed?source=a%00b", "/v1/events/failed?name=%20"])
def test_a_nul_or_a_blank_in_a_listings_text_filter_is_a_400_naming_it(client: tuple[TestClient, dict[str, str]],
                                                                        path: str) -> None:
    test_client, admin = client
    answer = test_client.get(path, headers=admin)
    assert (answer.status_code, [e["path"] for e in answer.json()["errors"]]) == (400, [path.split("?")[1].split("=")[0]])
