"""Unknown deliveries: a crash leaves only the send in flight unknown; operators resolve the rest.

On SQLite and PostgreSQL: the deliverer and the sweeper, ``journey deliveries`` and the
admin API's ``/v1/deliveries``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update
from starlette.testclient import TestClient

from channels import registry
from channels.base import Message
from channels.base import Result as SendResult
from channels.stub import StubChannel
from engine.api import create_app
from engine.cli import main
from engine.cli.codes import RET_INVALID, RET_NOT_FOUND
from engine.delivery import CLAIM_CHUNK, RESENT_DEDUPLICATED, UNKNOWN_ERROR, Abandoned, sweep_abandoned
from engine.services import Services
from engine.storage.models import Delivery, TraceEntry
from tests.conftest import create_key
from tests.unit.test_api_suppressions import basic
from tests.unit.test_delivery import make_deliverer
from tests.unit.test_policy import NOON, add_deliveries, make_world

LATER = NOON + timedelta(hours=1)  # long after any claim of the tests
AFTER = timedelta(minutes=5)  # the sweeper's threshold


@pytest.fixture
def world(any_services):  # type: ignore[no-untyped-def]
    return make_world(any_services, "UTC")


def statuses(services: Services, ids: list[int]) -> list[str]:
    with services.sessions() as session:
        found = dict(session.execute(select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids))).all())
    return [found[i] for i in ids]


def sweep(services: Services, now=LATER, deduplicating=frozenset()) -> Abandoned:  # type: ignore[no-untyped-def]
    with services.sessions.begin() as session:
        return sweep_abandoned(session, now, AFTER, deduplicating)


class StoppingChannel(StubChannel):
    """A stub whose ``stop_at``-th send runs ``while_sending`` first: what a crash there would leave."""

    def __init__(self, stop_at: int, while_sending: Callable[[], object]) -> None:
        super().__init__("email")
        self.stop_at, self.while_sending, self.seen = stop_at, while_sending, None

    def deliver(self, message: Message) -> SendResult:
        if len(self.attempts) + 1 == self.stop_at:
            self.seen = self.while_sending()
        return super().deliver(message)


def test_a_worker_stopped_mid_chunk_leaves_only_its_send_in_flight_unknown(world):
    # Given a chunk of deliveries, claimed and prepared together
    services, customer_id, _ = world
    ids = add_deliveries(services, customer_id, CLAIM_CHUNK)
    # When the worker stops during its third send, and the sweeper runs later
    channel = StoppingChannel(3, lambda: sweep(services))
    services.adapters["email"] = channel
    make_deliverer(services).deliver_many(ids, NOON)
    # Then the claims never handed to the adapter are pending again, and only the third is unknown
    assert channel.seen == Abandoned(requeue=[(i, "email") for i in ids[3:]], released=CLAIM_CHUNK - 3, unknown=1,
                                     resent=0)


def test_a_worker_whose_claims_expired_does_not_send_them(world):
    # Given a worker so slow that the sweeper gave its claims back during its second send
    services, customer_id, _ = world
    ids = add_deliveries(services, customer_id, CLAIM_CHUNK)
    channel = StoppingChannel(2, lambda: sweep(services))
    services.adapters["email"] = channel
    # When it carries on, then its next sends are not its own any more: it sends nothing else
    make_deliverer(services).deliver_many(ids, NOON)
    assert (len(channel.sent), statuses(services, ids)[2:]) == (2, ["pending"] * (CLAIM_CHUNK - 2))


def test_the_adapters_of_deduplicating_providers_say_so():
    assert registry.deduplicating() == {"webhook", "retargeting"}


def test_an_unknown_send_is_resent_only_where_the_provider_deduplicates(world):
    # Given a webhook and an email that were being sent when their worker stopped
    services, customer_id, _ = world
    ids = add_deliveries(services, customer_id, 2)
    with services.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(status="sending", attempts=1))
        session.execute(update(Delivery).where(Delivery.id == ids[0]).values(channel="webhook"))
    # When the sweeper finds them
    done = sweep(services, deduplicating=registry.deduplicating())
    # Then the webhook is pending again, with the reason in its trace; the email is unknown
    with services.sessions() as session:
        traces = session.execute(select(TraceEntry.what, TraceEntry.detail).order_by(TraceEntry.id)).all()
    assert (done.requeue, statuses(services, ids), [tuple(t) for t in traces]) == (
        [(ids[0], "webhook")], ["pending", "unknown"],
        [("delivery unknown", "webhook nps_survey"), ("delivery unknown", "email nps_survey"),
         ("delivery resent", f"webhook nps_survey ({RESENT_DEDUPLICATED})")],
    )


def unknown_deliveries(services: Services, customer_id: int, n: int) -> list[int]:
    ids = add_deliveries(services, customer_id, n)
    with services.sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(status="unknown", attempts=1,
                                                                           error=UNKNOWN_ERROR))
    return ids


Run = Callable[..., Result]


@pytest.fixture
def run(any_services: Services, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Run:
    url = request.getfixturevalue("sqlite_url" if any_services.engine.dialect.name == "sqlite" else "pg_url")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def test_the_command_line_lists_the_unknown_deliveries(world, run: Run):
    services, customer_id, _ = world
    ids = unknown_deliveries(services, customer_id, 2)
    add_deliveries(services, customer_id, 1)  # pending: not listed
    listed = json.loads(run("deliveries", "unknown", "--json").output)
    assert [(d["id"], d["customer"], d["journey"], d["step"], d["channel"], d["attempts"], d["error"])
            for d in listed] == [(i, "ada", "nps_survey", "survey", "email", 1, UNKNOWN_ERROR) for i in ids]


def test_the_command_line_resends_an_unknown_delivery_and_the_trace_says_who(world, run: Run):
    services, customer_id, stub = world
    ids = unknown_deliveries(services, customer_id, 2)
    # (the command's queue is its own in-memory one here: the sweeper would enqueue it again)
    done = run("deliveries", "resend", str(ids[0]))
    with services.sessions() as session:
        trace = session.execute(select(TraceEntry.detail).where(TraceEntry.what == "delivery resent")).scalar_one()
    assert (done.stdout, statuses(services, ids), trace.startswith("email nps_survey (by command line")) == (
        f"resent 1 delivery: {ids[0]}\n", ["pending", "unknown"], True)


def test_the_command_line_marks_unknown_deliveries_sent(world, run: Run):
    services, customer_id, stub = world
    ids = unknown_deliveries(services, customer_id, 2)
    done = run("deliveries", "mark-sent", *map(str, ids))
    assert (done.exit_code, statuses(services, ids), stub.sent) == (0, ["sent", "sent"], [])


def test_the_command_line_names_every_bad_id_and_changes_nothing(world, run: Run):
    services, customer_id, _ = world
    [unknown] = unknown_deliveries(services, customer_id, 1)
    [pending] = add_deliveries(services, customer_id, 1)
    missing = run("deliveries", "resend", str(unknown), "999998", "999999")
    wrong = run("deliveries", "mark-sent", str(unknown), str(pending))
    assert (missing.exit_code, wrong.exit_code, statuses(services, [unknown])) == (RET_NOT_FOUND, RET_INVALID, ["unknown"])
    assert "no delivery has the id 999998, 999999" in missing.output
    assert f"ids[1]: delivery {pending} is pending; only unknown deliveries can be marked sent" in wrong.output


def test_resend_all_takes_every_unknown_delivery(world, run: Run):
    services, customer_id, _ = world
    ids = unknown_deliveries(services, customer_id, 3)
    assert (run("deliveries", "resend", "--all").stdout, statuses(services, ids)) == (
        "resent 3 deliveries\n", ["pending"] * 3)


@pytest.fixture
def api(world):  # type: ignore[no-untyped-def]
    services, customer_id, stub = world
    with TestClient(create_app(services)) as client:
        yield client, services, customer_id, basic(create_key(services, "ops", admin=True))


def test_the_api_pages_the_unknown_deliveries(api):
    client, services, customer_id, admin = api
    ids = unknown_deliveries(services, customer_id, 3)
    first = client.get("/v1/deliveries", params={"status": "unknown", "limit": 2}, headers=admin).json()
    rest = client.get("/v1/deliveries", params={"status": "unknown", "cursor": first["nextCursor"]}, headers=admin).json()
    assert ([d["id"] for d in first["deliveries"] + rest["deliveries"]], rest["nextCursor"]) == (ids, None)


def test_the_api_resends_and_marks_sent_with_the_admin_key_only(api):
    client, services, customer_id, admin = api
    ids = unknown_deliveries(services, customer_id, 2)
    write = basic(create_key(services, "app"))
    refused = client.post("/v1/deliveries/resend", json={"ids": ids}, headers=write)
    resent = client.post("/v1/deliveries/resend", json={"ids": [ids[0]]}, headers=admin)
    marked = client.post("/v1/deliveries/mark-sent", json={"ids": [ids[1]]}, headers=admin)
    with services.sessions() as session:
        notes = [tuple(t) for t in session.execute(select(TraceEntry.what, TraceEntry.detail).order_by(TraceEntry.id))]
    assert (refused.status_code, resent.json()["deliveries"][0]["status"], marked.json()["deliveries"][0]["status"],
            notes) == (403, "pending", "sent", [("delivery resent", "email nps_survey (by admin API, key ops)"),
                                                ("delivery marked sent", "email nps_survey (by admin API, key ops)")])


def test_the_api_names_every_bad_id(api):
    client, services, customer_id, admin = api
    [pending] = add_deliveries(services, customer_id, 1)
    missing = client.post("/v1/deliveries/resend", json={"ids": [pending, 999999]}, headers=admin)
    wrong = client.post("/v1/deliveries/mark-sent", json={"ids": [pending]}, headers=admin)
    malformed = client.post("/v1/deliveries/resend", json={"ids": ["x", 0], "every": 1}, headers=admin)
    assert (missing.status_code, wrong.status_code, malformed.status_code) == (404, 409, 400)
    assert missing.json()["message"] == (f"no delivery has the id 999999 (and delivery {pending} is pending; only "
                                         "unknown deliveries can be resent (see `journey deliveries list --status "
                                         "unknown`))")
    assert [e["path"] for e in wrong.json()["errors"]] == ["ids[0]"]
    assert [e["path"] for e in malformed.json()["errors"]] == ["body.ids.0", "body.ids.1", "body.every"]
