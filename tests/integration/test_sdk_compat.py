"""The real Segment and RudderStack Python SDKs against one running engine: same calls,
same stored events and profiles. A recording proxy in front of ``journey serve`` keeps
what each SDK really sends, so the differences between them are known and listed in
docs/ingestion.md ("Segment and RudderStack SDKs")."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
import rudderstack.analytics as rudder
import segment.analytics as segment
from sqlalchemy import select

from engine.storage.models import Event
from tests.conftest import create_key
from tests.integration.conftest import RunningEngine
from tests.integration.test_segment_sdk import wait_processed

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)


class Recorder(ThreadingHTTPServer):
    """A loopback proxy that records each request (path, headers, decoded JSON) and forwards it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _RecordingHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        plain = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
        self.server.requests.append({"path": self.path, "headers": headers, "body": orjson.loads(plain)})
        forwarded = {k: v for k, v in headers.items() if k in ("authorization", "content-type", "content-encoding")}
        response = httpx.post(self.server.upstream + self.path, content=raw, headers=forwarded, timeout=30)
        self.send_response(response.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def recorder(running_engine: RunningEngine) -> Iterator[Recorder]:
    server = Recorder(running_engine.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def make_client(sdk: str, write_key: str, url: str, errors: list[Exception], **options: Any) -> Any:
    """The SDK's client as its README configures it: write key, host (data plane URL), defaults."""

    def on_error(error: Exception, batch: Any) -> None:
        errors.append(error)

    module = segment if sdk == "segment" else rudder
    return module.Client(write_key, host=url, on_error=on_error, upload_size=100, **options)


def send_journey(client: Any, p: str) -> list[dict[str, Any]]:
    """The same calls of one customer, ids prefixed by ``p``; returns the messages as enqueued."""
    sent = [
        client.page(anonymous_id=f"{p}anon", name="Pricing", category="Docs", properties={"path": "/pricing"},
                    context={"ip": "203.0.113.9", "timezone": "Europe/Paris"}, timestamp=AT, message_id="m-page"),
        client.track(anonymous_id=f"{p}anon", event="Product Viewed", properties={"sku": "SKU-1", "price": 9.5},
                     timestamp=AT + timedelta(seconds=5), message_id="m-viewed"),
        client.identify(user_id=f"{p}user", anonymous_id=f"{p}anon", traits={"email": "ada@example.com", "plan": "free"},
                        timestamp=AT + timedelta(seconds=10), message_id="m-identify-1"),
        client.screen(user_id=f"{p}user", name="Checkout", properties={"step": 2},
                      timestamp=AT + timedelta(seconds=20), message_id="m-screen"),
        client.group(user_id=f"{p}user", group_id="acme", traits={"seats": 10},
                     timestamp=AT + timedelta(seconds=30), message_id="m-group"),
        # A track's context.traits is the client's copy of the user: it never updates the profile.
        client.track(user_id=f"{p}user", event="Order Completed", properties={"order_id": "o-1", "total": 42},
                     context={"traits": {"plan": "stale"}}, timestamp=AT + timedelta(seconds=40), message_id="m-order"),
        client.identify(user_id=f"{p}user", traits={"plan": "pro", "name": "Ada"},
                        timestamp=AT + timedelta(minutes=5), message_id="m-identify-2"),
        client.alias(previous_id=f"{p}legacy", user_id=f"{p}user", timestamp=AT + timedelta(minutes=6), message_id="m-alias"),
    ]
    client.flush()
    client.join()
    assert all(ok for ok, _ in sent)
    return [message for _, message in sent]


def stored_events(engine: RunningEngine, source: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The source's stored events by messageId, ids unprefixed, without what names the SDK."""
    with engine.services.sessions() as session:
        rows = session.execute(select(Event).where(Event.source == source)).scalars().all()
        out = {}
        for row in rows:
            context = {k: v for k, v in row.context.items() if k != "library"}
            if row.type == "identify":
                context.pop("traits", None)  # RudderStack's copy of the traits (kept, compared below)
            out[row.message_id] = {
                "type": row.type, "event": row.event, "name": row.name,
                "user_id": _strip(row.user_id, prefix), "anonymous_id": _strip(row.anonymous_id, prefix),
                "previous_id": _strip(row.previous_id, prefix), "group_id": row.group_id,
                "properties": row.properties, "traits": row.traits, "context": context,
                "original_timestamp": row.original_timestamp, "has_sent_at": row.sent_at is not None,
                "processed": row.processed_at is not None and row.error is None,
            }  # fmt: skip
        return out


def profile(engine: RunningEngine, ident: str, prefix: str) -> dict[str, Any]:
    """The customer view's identity and traits, ids unprefixed."""
    response = httpx.get(f"{engine.url}/v1/customers/{ident}", auth=(engine.admin_key, ""))
    assert response.status_code == 200, response.text
    view = response.json()
    return {
        "userId": _strip(view["userId"], prefix),
        "anonymousIds": sorted(_strip(a, prefix) for a in view["anonymousIds"]),
        "traits": view["traits"],
        "timezone": view["timezone"],
    }


def _strip(value: str | None, prefix: str) -> str | None:
    return value[len(prefix):] if value and value.startswith(prefix) else value


def traffic_shape(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """What an SDK's requests look like, field by field, for comparing two SDKs."""
    shape: dict[str, Any] = {
        "paths": sorted({r["path"] for r in requests}),
        "Content-Encoding": sorted({r["headers"].get("content-encoding", "none") for r in requests}),
        "Authorization": sorted({r["headers"]["authorization"].split()[0] for r in requests}),
        "User-Agent": sorted({r["headers"]["user-agent"].split("/")[0] for r in requests}),
        "body keys": sorted({k for r in requests for k in r["body"]}),
    }
    items = [item for r in requests for item in r["body"]["batch"]]
    for item in items:
        at = item["type"]
        shape[f"{at} keys"] = sorted(item)
        shape[f"{at} context keys"] = sorted(item["context"])
        shape[f"{at} integrations"] = item.get("integrations")
        shape[f"{at} type"] = item["type"]
    shape["library"] = sorted({item["context"]["library"]["name"] for item in items})
    return shape


TYPES = ("identify", "track", "page", "screen", "group", "alias")
#: What the two SDKs send differently (Segment 2.4, RudderStack 2.1), as docs/ingestion.md lists it:
#: ``{aspect: (Segment's, RudderStack's)}``; for lists, what only that SDK sends.
DIFFERENCES = {
    "Content-Encoding": (["none"], ["gzip"]),
    "body keys": (["writeKey"], []),
    **{f"{t} keys": ([], ["channel"]) for t in TYPES},
    "identify keys": (["traits"], ["channel"]),
    "identify context keys": ([], ["traits"]),
    **{f"{t} integrations": ({}, {"All": True}) for t in TYPES},
}


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Each aspect where two traffic shapes differ: ``{aspect: (a's, b's)}``; lists by what only one has."""
    found = {}
    for key in sorted(set(a) | set(b)):
        mine, theirs = a.get(key), b.get(key)
        if mine == theirs:
            continue
        if isinstance(mine, list) and isinstance(theirs, list):
            found[key] = (sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine)))
        else:
            found[key] = (mine, theirs)
    return found


def test_segment_and_rudderstack_sdks_store_the_same_events_and_profiles(running_engine: RunningEngine, recorder: Recorder):
    # Given each SDK configured as its README says (write key, host / data plane URL, defaults)
    keys = {"segment": running_engine.write_key, "rudderstack": create_key(running_engine.services, "rudder-app")}
    sources = {"segment": "sdk-app", "rudderstack": "rudder-app"}
    errors: list[Exception] = []
    traffic: dict[str, list[dict[str, Any]]] = {}
    sent: dict[str, list[dict[str, Any]]] = {}

    # When each sends the same calls, in batches through flush()
    for sdk in ("segment", "rudderstack"):
        before = len(recorder.requests)
        sent[sdk] = send_journey(make_client(sdk, keys[sdk], recorder.url, errors, max_retries=1), f"{sdk}-")
        traffic[sdk] = recorder.requests[before:]
    assert errors == []
    wait_processed(running_engine, 2 * len(sent["segment"]))

    # Then they differ on the wire only as docs/ingestion.md says
    found = differences(traffic_shape(traffic["segment"]), traffic_shape(traffic["rudderstack"]))
    assert found == DIFFERENCES

    # And every event is stored once, the same for both: ids, traits, properties, client times, context
    segment_events = stored_events(running_engine, sources["segment"], "segment-")
    rudder_events = stored_events(running_engine, sources["rudderstack"], "rudderstack-")
    assert sorted(segment_events) == sorted(m["messageId"] for m in sent["segment"])
    assert rudder_events == segment_events
    assert segment_events["m-identify-1"]["traits"] == {"email": "ada@example.com", "plan": "free"}
    assert segment_events["m-page"]["original_timestamp"] == AT
    assert segment_events["m-page"]["context"] == {"ip": "203.0.113.9", "timezone": "Europe/Paris"}
    assert all(e["processed"] and e["has_sent_at"] for e in segment_events.values())

    # And the profiles are the same: traits merged (a track's context.traits ignored), ids linked
    profiles = {sdk: profile(running_engine, f"{sdk}-user", f"{sdk}-") for sdk in ("segment", "rudderstack")}
    assert profiles["rudderstack"] == profiles["segment"]
    assert profiles["segment"]["traits"] == {"email": "ada@example.com", "plan": "pro", "name": "Ada"}
    assert profiles["segment"]["anonymousIds"] == ["anon", "legacy"]
    assert profiles["segment"]["timezone"] == "Europe/Paris"


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_a_large_batch_with_one_bad_message_is_delivered_by_either_sdk(running_engine: RunningEngine, sdk: str):
    # Given an SDK that batches up to 100 messages (Segment splits at 475 KB, RudderStack at 4 MB)
    errors: list[Exception] = []
    client = make_client(sdk, running_engine.write_key, running_engine.url, errors, max_retries=0)
    # When it sends 40 messages of 20 KB each, one of them with an event name the engine refuses
    blob = "x" * 20_000
    sent = [client.track(user_id="u-1", event="Viewed", properties={"blob": blob}, message_id=f"m-{i}") for i in range(40)]
    client.track(user_id="u-1", event="y" * 300, message_id="m-bad")
    client.flush()
    client.join()
    # Then the SDK reports no failure (nothing to retry, nothing dropped) and every good message is stored
    assert errors == []
    wait_processed(running_engine, len(sent))
    with running_engine.services.sessions() as session:
        stored = sorted(session.execute(select(Event.message_id)).scalars())
    assert stored == sorted(message["messageId"] for _, message in sent)
