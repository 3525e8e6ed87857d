"""The ingestion API on the twin (SQLite, StubBroker): auth, bad input, dedup, batches."""

from __future__ import annotations

import base64
import gzip
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from sqlalchemy import func, select

from engine import keys
from engine.storage.models import Event
from tests.conftest import create_key, drain


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def count_events(services) -> int:  # type: ignore[no-untyped-def]
    with services.sessions() as session:
        return session.execute(select(func.count()).select_from(Event)).scalar_one()


TRACK = {"userId": "u1", "event": "Order Completed", "properties": {"total": 42}}


class TestAuth:
    def test_no_key_is_401_with_json_error(self, client, services):
        response = client.post("/v1/track", json=TRACK)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["code"] == "unauthorized"
        assert "no API key" in response.json()["message"]
        assert count_events(services) == 0

    def test_wrong_key_is_401(self, client, services, write_key):
        response = client.post("/v1/track", json=TRACK, headers=basic(write_key + "x"))
        assert response.status_code == 401
        assert "unknown API key" in response.json()["message"]
        assert count_events(services) == 0

    def test_revoked_key_is_401(self, client, services, write_key):
        with services.sessions.begin() as session:
            assert keys.revoke_key(session, "test-app") == 1
        response = client.post("/v1/track", json=TRACK, headers=basic(write_key))
        assert response.status_code == 401
        assert "revoked" in response.json()["message"]

    def test_write_key_on_admin_path_is_403(self, client, write_key):
        response = client.get("/v1/customers/u1", headers=basic(write_key))
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
        assert "admin key" in response.json()["message"]

    def test_admin_key_reads_customers(self, client, services, write_key, admin_key):
        client.post("/v1/identify", json={"userId": "u1", "traits": {"plan": "pro"}}, headers=basic(write_key))
        drain(services)
        response = client.get("/v1/customers/u1", headers=basic(admin_key))
        assert response.status_code == 200
        assert response.json()["traits"] == {"plan": "pro"}

    def test_write_key_in_body_is_accepted(self, client, services, write_key):
        response = client.post("/v1/track", json={**TRACK, "writeKey": write_key})
        assert response.status_code == 200
        assert response.json() == {"success": True}
        assert count_events(services) == 1

    def test_keys_are_stored_only_as_hashes(self, services, write_key):
        with services.sessions() as session:
            (row,) = keys.list_keys(session)
        assert write_key.startswith("je_write_")
        assert row.key_hash == keys.hash_key(write_key)
        assert write_key not in (row.prefix, row.key_hash, row.name)


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "path", "words"),
        [
            ({"event": "x"}, "userId", "userId or anonymousId is required"),
            ({"userId": "u1"}, "event", "is required for a track call"),
            ({"userId": ["u1"], "event": "x"}, "userId", "expected a string, got an array"),
            ({"userId": "u1", "event": 5}, "event", "expected a string, got a number"),
            ({"userId": "u1", "event": "x", "properties": [1]}, "properties", "expected a JSON object, got an array"),
            ({"userId": "u1", "event": "x", "context": "web"}, "context", "expected a JSON object, got a string"),
            ({"userId": "u1", "event": "x", "timestamp": "yesterday"}, "timestamp", "is not an ISO-8601 time"),
            ({"userId": True, "event": "x"}, "userId", "expected a string, got a boolean"),
        ],
    )
    def test_each_problem_is_a_400_naming_the_field(self, client, services, write_key, body, path, words):
        response = client.post("/v1/track", json=body, headers=basic(write_key))
        assert response.status_code == 400
        data = response.json()
        assert data["code"] == "invalid_request"
        assert any(e["path"] == path and words in e["message"] for e in data["errors"])
        assert count_events(services) == 0

    def test_every_problem_is_named_at_once(self, client, write_key):
        body = {"event": 5, "properties": [], "timestamp": "soon"}
        response = client.post("/v1/track", json=body, headers=basic(write_key))
        paths = sorted(e["path"] for e in response.json()["errors"])
        assert paths == ["event", "properties", "timestamp", "userId"]
        assert response.json()["message"].startswith("4 problems:")

    def test_malformed_json(self, client, write_key):
        response = client.post("/v1/track", content=b'{"userId": "u1",', headers=basic(write_key))
        assert response.status_code == 400
        assert response.json()["errors"][0]["path"] == "body"
        assert "not valid JSON" in response.json()["errors"][0]["message"]

    def test_body_that_is_not_an_object(self, client, write_key):
        response = client.post("/v1/track", content=b"[1, 2]", headers=basic(write_key))
        assert response.status_code == 400
        assert "expected a JSON object" in response.json()["errors"][0]["message"]

    def test_unknown_type_in_batch(self, client, services, write_key):
        body = {"batch": [{"type": "purchase", "userId": "u1"}]}
        response = client.post("/v1/batch", json=body, headers=basic(write_key))
        assert response.status_code == 400
        (rejected,) = response.json()["rejected"]
        assert rejected["index"] == 0
        assert rejected["errors"][0]["path"] == "batch[0].type"
        assert "unknown type 'purchase'" in rejected["errors"][0]["message"]
        assert count_events(services) == 0

    def test_a_misspelt_type_in_a_batch_gets_a_suggestion(self, client, services, write_key):
        body = {"batch": [{"type": "trak", "event": "x", "userId": "u1"}]}
        response = client.post("/v1/batch", json=body, headers=basic(write_key))
        assert response.json()["rejected"][0]["errors"][0]["message"] == (
            "unknown type 'trak'. Did you mean 'track'? (expected one of identify, track, page, screen, group, alias)"
        )

    def test_a_misspelt_endpoint_gets_a_suggestion(self, client, write_key):
        response = client.post("/v1/trak", json=TRACK, headers=basic(write_key))
        assert response.status_code == 404
        assert response.json()["message"].startswith("no endpoint POST /v1/trak. Did you mean '/v1/track'? (endpoints: ")

    def test_event_over_32kb(self, client, services, write_key):
        body = {**TRACK, "properties": {"blob": "x" * 33_000}}
        response = client.post("/v1/track", json=body, headers=basic(write_key))
        assert response.status_code == 400
        assert "at most 32768 bytes (32 KB)" in response.json()["errors"][0]["message"]
        assert count_events(services) == 0

    def test_batch_over_4mb(self, client, services, write_key):
        item = {"type": "track", "userId": "u1", "event": "x", "properties": {"blob": "x" * 30_000}}
        body = {"batch": [dict(item, messageId=str(i)) for i in range(140)]}
        response = client.post("/v1/batch", json=body, headers=basic(write_key))
        assert response.status_code == 400
        assert "at most 4194304 bytes (4 MB)" in response.json()["errors"][0]["message"]
        assert count_events(services) == 0

    def test_gzip_bomb_is_refused_not_inflated(self, client, services, write_key):
        body = gzip.compress(b'{"batch": [' + b" " * 10_000_000 + b"]}")
        headers = {**basic(write_key), "Content-Encoding": "gzip"}
        response = client.post("/v1/batch", content=body, headers=headers)
        assert response.status_code == 400
        assert "4 MB" in response.json()["errors"][0]["message"]

    def test_batch_without_batch_array(self, client, write_key):
        response = client.post("/v1/batch", json={"messages": []}, headers=basic(write_key))
        assert response.status_code == 400
        assert response.json()["errors"][0]["path"] == "batch"


class TestBatch:
    def test_good_items_are_kept_and_bad_ones_reported_in_a_200(self, client, services, write_key):
        body = {
            "batch": [
                {"type": "track", "userId": "u1", "event": "A", "messageId": "m1"},
                {"type": "track", "event": "B", "messageId": "m2"},
                {"type": "identify", "userId": "u1", "traits": {"name": "Ada"}, "messageId": "m3"},
                {"type": "alias", "userId": "u1", "messageId": "m4"},
            ]
        }
        response = client.post("/v1/batch", json=body, headers=basic(write_key))
        assert response.status_code == 200  # the RudderStack SDK retries anything but a 200
        data = response.json()
        assert data["code"] == "partial"
        assert data["accepted"] == 2
        assert [r["index"] for r in data["rejected"]] == [1, 3]
        assert data["rejected"][0]["errors"][0]["path"] == "batch[1].userId"
        assert data["rejected"][1]["errors"][0]["path"] == "batch[3].previousId"
        with services.sessions() as session:
            stored = sorted(session.execute(select(Event.message_id)).scalars())
        assert stored == ["m1", "m3"]

    def test_gzip_batch(self, client, services, write_key):
        body = gzip.compress(orjson.dumps({"batch": [{"type": "track", "userId": "u1", "event": "A"}]}))
        headers = {**basic(write_key), "Content-Encoding": "gzip"}
        assert client.post("/v1/batch", content=body, headers=headers).status_code == 200
        assert count_events(services) == 1

    def test_every_type_is_accepted(self, client, services, write_key):
        batch = [
            {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}},
            {"type": "track", "userId": "u1", "event": "Signed Up"},
            {"type": "page", "userId": "u1", "name": "Home", "properties": {"path": "/"}},
            {"type": "screen", "userId": "u1", "name": "Settings"},
            {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": "team"}},
            {"type": "alias", "userId": "u1", "previousId": "anon-1"},
        ]
        assert client.post("/v1/batch", json={"batch": batch}, headers=basic(write_key)).status_code == 200
        with services.sessions() as session:
            types = sorted(session.execute(select(Event.type)).scalars())
        assert types == ["alias", "group", "identify", "page", "screen", "track"]


class TestDurability:
    def test_same_message_id_is_stored_once(self, client, services, write_key):
        for _ in range(5):
            response = client.post("/v1/track", json={**TRACK, "messageId": "m-1"}, headers=basic(write_key))
            assert response.status_code == 200
        assert count_events(services) == 1

    def test_message_ids_are_unique_per_source(self, client, services, write_key):
        other = create_key(services, "mobile-app")
        client.post("/v1/track", json={**TRACK, "messageId": "m-1"}, headers=basic(write_key))
        client.post("/v1/track", json={**TRACK, "messageId": "m-1"}, headers=basic(other))
        with services.sessions() as session:
            sources = sorted(session.execute(select(Event.source)).scalars())
        assert sources == ["mobile-app", "test-app"]

    def test_event_without_message_id_gets_one(self, client, services, write_key):
        client.post("/v1/track", json=TRACK, headers=basic(write_key))
        client.post("/v1/track", json=TRACK, headers=basic(write_key))
        with services.sessions() as session:
            ids = list(session.execute(select(Event.message_id)).scalars())
        assert len(set(ids)) == 2 and all(len(i) == 36 for i in ids)

    def test_stored_event_stays_pending_until_processed(self, client, services, write_key):
        client.post("/v1/track", json=TRACK, headers=basic(write_key))
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert event.processed_at is None
        drain(services)
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert event.processed_at is not None and event.customer_id is not None

    def test_broker_down_still_acknowledges_a_committed_event(self, client, services, write_key, monkeypatch):
        def broken(*args, **kwargs):
            raise ConnectionError("broker unreachable")

        monkeypatch.setattr(services.actors.process_events, "send", broken)
        response = client.post("/v1/track", json=TRACK, headers=basic(write_key))
        assert response.status_code == 200
        assert count_events(services) == 1


class TestClockSkew:
    def test_timestamp_is_corrected_by_the_client_clock_skew(self, client, services, write_key):
        # The client's clock runs one hour fast: it says the event happened at 10:00:00
        # and was sent at 10:00:05, on its clock. We keep the 5 s, on our clock.
        client_time = datetime(2030, 1, 1, 10, 0, 0, tzinfo=timezone.utc)
        body = {**TRACK, "timestamp": client_time.isoformat(), "sentAt": (client_time + timedelta(seconds=5)).isoformat()}
        client.post("/v1/track", json=body, headers=basic(write_key))
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert event.received_at < client_time  # our clock, not the client's (no two clock readings compared)
        assert event.timestamp == event.received_at - timedelta(seconds=5)
        assert event.original_timestamp == client_time
        assert event.sent_at == client_time + timedelta(seconds=5)

    def test_batch_sent_at_applies_to_items_without_their_own(self, client, services, write_key):
        sent = "2030-01-01T10:00:10Z"
        batch = [{"type": "track", "userId": "u1", "event": "A", "timestamp": "2030-01-01T10:00:00Z"}]
        client.post("/v1/batch", json={"batch": batch, "sentAt": sent}, headers=basic(write_key))
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert event.timestamp == event.received_at - timedelta(seconds=10)

    def test_without_sent_at_the_timestamp_is_kept(self, client, services, write_key):
        body = {**TRACK, "timestamp": "2024-05-01T08:00:00+02:00"}
        client.post("/v1/track", json=body, headers=basic(write_key))
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert event.timestamp == datetime(2024, 5, 1, 6, 0, tzinfo=timezone.utc)

    def test_without_any_time_the_timestamp_is_received_at(self, client, services, write_key):
        client.post("/v1/track", json=TRACK, headers=basic(write_key))
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert event.timestamp == event.received_at


class TestUnstorableInput:
    def test_nul_character_is_a_400_naming_its_place(self, client, services, write_key):
        body = {**TRACK, "properties": {"note": "a\u0000b"}}
        response = client.post("/v1/track", json=body, headers=basic(write_key))
        assert response.status_code == 400
        (error,) = response.json()["errors"]
        assert error["path"] == "properties.note"
        assert "NUL character" in error["message"]
        assert count_events(services) == 0


class TestGroupCommit:
    def test_concurrent_requests_are_all_stored(self, services, write_key):
        import asyncio

        import httpx2

        from engine.api import create_app

        app = create_app(services)

        async def main() -> list[int]:
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://engine") as http:
                responses = await asyncio.gather(
                    *(
                        http.post("/v1/track", json={**TRACK, "messageId": f"m{i}"}, headers=basic(write_key))
                        for i in range(50)
                    )
                )
            return [r.status_code for r in responses]

        assert asyncio.run(main()) == [200] * 50
        assert count_events(services) == 50

    def test_a_failing_request_fails_alone(self, services, write_key, monkeypatch):
        import asyncio

        from engine import ingest

        writer = ingest.EventWriter(services)
        real = ingest.store

        def store(session, rows):  # type: ignore[no-untyped-def]
            if any(row["message_id"] == "poison" for row in rows):
                raise ValueError("cannot store this one")
            return real(session, rows)

        monkeypatch.setattr(ingest, "store", store)
        now = datetime.now(timezone.utc)
        good = [ingest.prepare({**TRACK, "messageId": f"g{i}"}, source="s", received_at=now, type_="track")[0] for i in range(3)]
        bad = ingest.prepare({**TRACK, "messageId": "poison"}, source="s", received_at=now, type_="track")[0]

        async def main() -> list[object]:
            results = await asyncio.gather(*(writer.write(rows) for rows in [*good, bad]), return_exceptions=True)
            await writer.close()
            return results

        results = asyncio.run(main())
        assert results[:3] == [None, None, None]
        assert isinstance(results[3], ValueError)
        assert count_events(services) == 3


def profile_traits(client, admin_key: str, ident: str = "u1") -> dict[str, object]:  # type: ignore[no-untyped-def]
    response = client.get(f"/v1/customers/{ident}", headers=basic(admin_key))
    assert response.status_code == 200, response.text
    return response.json()["traits"]


class TestRudderStack:
    """What the RudderStack SDKs send differently from Segment's (docs/ingestion.md)."""

    def test_identify_traits_in_context_traits_update_the_profile(self, client, services, write_key, admin_key):
        body = {"userId": "u1", "context": {"traits": {"email": "ada@example.com", "timezone": "Europe/Paris"}}}
        assert client.post("/v1/identify", json=body, headers=basic(write_key)).status_code == 200
        drain(services)
        assert profile_traits(client, admin_key) == {"email": "ada@example.com", "timezone": "Europe/Paris"}
        assert client.get("/v1/customers/u1", headers=basic(admin_key)).json()["timezone"] == "Europe/Paris"

    def test_context_traits_are_kept_in_the_context(self, client, services, write_key):
        body = {"userId": "u1", "context": {"traits": {"plan": "pro"}, "ip": "203.0.113.9"}}
        client.post("/v1/identify", json=body, headers=basic(write_key))
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert (event.traits, event.context) == ({"plan": "pro"}, {"traits": {"plan": "pro"}, "ip": "203.0.113.9"})

    def test_top_level_traits_win_over_context_traits(self, client, services, write_key, admin_key):
        body = {"userId": "u1", "traits": {"plan": "pro"}, "context": {"traits": {"plan": "free", "age": 3}}}
        client.post("/v1/identify", json=body, headers=basic(write_key))
        drain(services)
        assert profile_traits(client, admin_key) == {"plan": "pro"}

    def test_empty_top_level_traits_count_as_none(self, client, services, write_key, admin_key):
        body = {"userId": "u1", "traits": {}, "context": {"traits": {"plan": "pro"}}}
        client.post("/v1/identify", json=body, headers=basic(write_key))
        drain(services)
        assert profile_traits(client, admin_key) == {"plan": "pro"}

    def test_a_tracks_context_traits_never_update_the_profile(self, client, services, write_key, admin_key):
        client.post("/v1/identify", json={"userId": "u1", "traits": {"plan": "pro"}}, headers=basic(write_key))
        track = {**TRACK, "context": {"traits": {"plan": "free", "name": "Ada"}}}
        client.post("/v1/track", json=track, headers=basic(write_key))
        drain(services)
        assert profile_traits(client, admin_key) == {"plan": "pro"}

    def test_a_groups_traits_are_the_groups_not_the_users(self, client, services, write_key, admin_key):
        group = {"userId": "u1", "groupId": "acme", "traits": {"seats": 10}, "context": {"traits": {"plan": "x"}}}
        client.post("/v1/identify", json={"userId": "u1", "traits": {"plan": "pro"}}, headers=basic(write_key))
        client.post("/v1/group", json=group, headers=basic(write_key))
        drain(services)
        assert profile_traits(client, admin_key) == {"plan": "pro"}

    def test_identify_context_traits_that_are_not_an_object_are_a_400(self, client, services, write_key):
        body = {"userId": "u1", "context": {"traits": ["plan", "pro"]}}
        response = client.post("/v1/identify", json=body, headers=basic(write_key))
        assert response.status_code == 400
        (error,) = response.json()["errors"]
        assert error["path"] == "context.traits"
        assert "expected a JSON object of the user's traits, got an array" in error["message"]
        assert count_events(services) == 0

    def test_original_timestamp_is_the_client_time_and_corrects_the_skew(self, client, services, write_key):
        # RudderStack's JavaScript and mobile SDKs send originalTimestamp, not timestamp.
        at = datetime(2030, 1, 1, 10, 0, 0, tzinfo=timezone.utc)
        body = {**TRACK, "originalTimestamp": at.isoformat(), "sentAt": (at + timedelta(seconds=7)).isoformat()}
        client.post("/v1/track", json=body, headers=basic(write_key))
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert (event.original_timestamp, event.timestamp) == (at, event.received_at - timedelta(seconds=7))

    def test_a_rudderstack_batch_is_stored_as_sent(self, client, services, write_key):
        # Basic auth, gzip, no writeKey in the body, channel and integrations {"All": true} on each item.
        item = {"type": "track", "userId": "u1", "event": "A", "messageId": "r1", "channel": "server",
                "integrations": {"All": True}, "context": {"library": {"name": "analytics-python", "version": "2.1.9"}},
                "timestamp": "2030-01-01T10:00:00.123456+00:00"}  # fmt: skip
        body = gzip.compress(orjson.dumps({"batch": [item], "sentAt": "2030-01-01T10:00:01.000001+00:00"}))
        response = client.post("/v1/batch", content=body, headers={**basic(write_key), "Content-Encoding": "gzip"})
        assert response.status_code == 200
        with services.sessions() as session:
            event = session.execute(select(Event)).scalar_one()
        assert (event.integrations, event.context["library"]["version"]) == ({"All": True}, "2.1.9")
        assert event.original_timestamp == datetime(2030, 1, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)

    def test_a_batch_over_segments_500kb_is_accepted(self, client, services, write_key):
        # RudderStack's SDKs send batches up to 4 MB and never retry a 400: refusing one loses it.
        item = {"type": "track", "userId": "u1", "event": "x", "properties": {"blob": "x" * 20_000}}
        body = {"batch": [dict(item, messageId=str(i)) for i in range(40)]}
        assert client.post("/v1/batch", json=body, headers=basic(write_key)).status_code == 200
        assert count_events(services) == 40

    def test_a_beacon_batch_with_the_write_key_in_the_url_is_stored(self, client, services, write_key):
        # RudderStack's browser SDK with useBeacon: navigator.sendBeacon sets no headers.
        body = orjson.dumps({"batch": [{"type": "track", "anonymousId": "a1", "event": "Left"}], "sentAt": "2030-01-01T10:00:00Z"})
        response = client.post(f"/beacon/v1/batch?writeKey={write_key}", content=body, headers={"Content-Type": "text/plain"})
        assert response.status_code == 200
        assert count_events(services) == 1
