"""The shipped journeys end to end, through the real channel adapters, to peers on loopback.

Given PostgreSQL, Redis and a Dramatiq worker, with every channel configured from the
environment (``channels/settings.py``) to reach a peer on loopback: aiosmtpd for email, and
a recording HTTP server each for the SMS API, the push API, the audiences API and the
webhook receiver (loopback allowed by ``WEBHOOK_ALLOW_NETWORKS``). All shipped journeys are
deployed; one journey's sample events (``journeys/samples``) are posted to the ingestion
API in timestamp order. The only change to a shipped file: nps_survey's detractor webhook
URL names the peer instead of support.example.com.

Time is virtual, as in ``journey simulate``: the workers' clock (``Services.clock``) is
set to each event's timestamp, and in between
the scheduler fires the timers and releases the sends deferred by quiet hours that fall
due, earliest first, each at its own moment (a timer due at the same instant as an event
fires after it). So waits such as ``{for: 7d, until: "10:00"}`` end where the sample's
timeline puts them (moving timers earlier on a real clock cannot: where a time-of-day wait
ends depends on the hour the test runs), and the policy judges quiet hours at the sample's
times, so the test passes at any hour of the day. After the last event the clock runs on
until the journey has no running enrollment and no send is pending.

Then, per journey: what each peer received, and every delivery row ``sent`` once with the
provider's id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import dramatiq
import pytest
import standardwebhooks
from sqlalchemy import func, select
from starlette.testclient import TestClient

from channels.email import message_id
from channels.settings import ChannelSettings
from engine import deploy
from engine.api import create_app
from engine.demo import VirtualClock
from engine.scheduler import Scheduler
from engine.services import Services
from engine.storage.models import Consent, Customer, Delivery, Enrollment, PointsEntry, Timer, TraceEntry
from tests.conftest import REDIS_URL, create_key, make_services
from tests.integration.channels.peers import (
    AUDIENCE_OP, DOMAIN, PUSH_NAME, SENDER, SMS_SID, WEBHOOK_SECRET, Peers, Recorded, provider_peers,
)
from tests.integration.settle import settle

pytestmark = pytest.mark.integration

JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"
PUBLIC_URL = "https://journeys.shop.example"
DETRACTOR_HOOK = "https://support.example.com/hooks/nps-detractor"
#: Scheduler rounds (timers and deferred sends) a replay may take; the samples need far fewer.
MAX_ROUNDS = 200


@pytest.fixture
def peers() -> Iterator[Peers]:
    """An SMTP peer and four HTTP peers answering as their providers do."""
    with provider_peers() as peers:
        yield peers


@dataclass(frozen=True)
class Row:
    """A delivery row, with its customer's id."""

    customer: str
    journey: str
    step: str
    channel: str
    kind: str
    key: str
    status: str
    provider_id: str | None
    error: str | None


@dataclass
class Shipped:
    """The engine with every shipped journey deployed, its peers, and a virtual clock."""

    services: Services
    peers: Peers
    clock: VirtualClock
    client: TestClient
    auth: dict[str, str]

    # -- driving --------------------------------------------------------------------------

    def replay(self, journey_id: str) -> None:
        """Post the journey's sample events on their timeline, then run it to its end."""
        lines = (JOURNEYS / "samples" / f"{journey_id}.jsonl").read_text(encoding="utf-8").splitlines()
        events = sorted((json.loads(line) for line in lines if line.strip()), key=lambda e: _at(e["timestamp"]))
        for event in events:
            self.run_until(_at(event["timestamp"]))
            response = self.client.post(f"/v1/{event['type']}", json=event, headers=self.auth)
            assert response.status_code == 200, response.text
            self.settle()
        for _ in range(MAX_ROUNDS):
            if not self.running(journey_id):
                return
            moment = self.next_moment()
            assert moment is not None, f"{journey_id} still runs, but no timer or deferred send is left"
            self.tick(moment)
        pytest.fail(f"{journey_id} still runs after {MAX_ROUNDS} scheduler rounds")

    def run_until(self, until: datetime) -> None:
        """Let the timers and deferred sends due before ``until`` go, earliest first."""
        for _ in range(MAX_ROUNDS):
            moment = self.next_moment()
            if moment is None or moment >= until:
                self.clock.current = max(self.clock.current, until)
                return
            self.tick(moment)
        pytest.fail(f"still work due before {until} after {MAX_ROUNDS} scheduler rounds")

    def tick(self, moment: datetime) -> None:
        """It is ``moment``: the scheduler enqueues due timers and deferred sends; the worker runs them."""
        self.clock.current = moment
        scheduler = Scheduler(self.services)
        scheduler.fire_due(moment)
        scheduler.sweep(moment)  # a send deferred by quiet hours goes out when its window ends
        self.settle()

    def next_moment(self) -> datetime | None:
        """The earliest due time of a timer not yet fired, or of a send deferred by quiet hours."""
        with self.services.sessions() as session:
            timer = session.execute(select(func.min(Timer.due_at)).where(Timer.fired_at.is_(None))).scalar()
            deferred = session.execute(
                select(func.min(Delivery.not_before))
                .where(Delivery.status == "pending", Delivery.not_before.is_not(None))
            ).scalar()
        return min((t for t in (timer, deferred) if t is not None), default=None)

    def running(self, journey_id: str) -> bool:
        """Whether the journey has an active enrollment, or any send is still pending."""
        with self.services.sessions() as session:
            active = session.execute(
                select(func.count()).select_from(Enrollment)
                .where(Enrollment.journey_id == journey_id, Enrollment.status == "active")
            ).scalar_one()
            pending = session.execute(
                select(func.count()).select_from(Delivery).where(Delivery.status == "pending")
            ).scalar_one()
        return bool(active or pending)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the worker has done all the work due now (:func:`tests.integration.settle.settle`)."""
        settle(self.services, timeout)

    # -- looking --------------------------------------------------------------------------

    def rows(self) -> list[Row]:
        """Every delivery, in the order they were sent: by the virtual second of sending (sends
        of one moment go out in parallel, on several channels, a few real milliseconds apart),
        then as they were made; unsent ones last."""
        with self.services.sessions() as session:
            found = session.execute(
                select(Customer.external_id, Delivery.journey_id, Delivery.step, Delivery.channel, Delivery.kind,
                       Delivery.key, Delivery.status, Delivery.provider_id, Delivery.error, Delivery.sent_at,
                       Delivery.id)
                .join(Customer, Customer.id == Delivery.customer_id)
            ).all()
        never = datetime.max.replace(tzinfo=timezone.utc)
        found.sort(key=lambda row: ((row.sent_at or never).replace(microsecond=0), row.id))
        return [Row(*row[:-2]) for row in found]

    def received(self) -> dict[str, list[tuple[str, Any]]]:
        """What the peers received, by idempotency key: (channel, the email or the HTTP request)."""
        emails = {message_id(row.key, DOMAIN): row.key for row in self.rows() if row.channel == "email"}
        found: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for email in self.peers.smtp.mailbox.messages:
            found[emails.get(str(email["Message-ID"]), str(email["Message-ID"]))].append(("email", email))
        for request in self.peers.sms.requests:
            found[request.headers.get("idempotency-key", "?")].append(("sms", request))
        for request in self.peers.audience.requests:
            found[request.headers.get("idempotency-key", "?")].append(("retargeting", request))
        for request in self.peers.push.requests:
            found[request.json()["message"]["data"]["idempotency_key"]].append(("push", request))
        for request in self.peers.webhook.requests:
            found[request.headers.get("webhook-id", "?")].append(("webhook", request))
        return found

    def sends(self, journey_id: str) -> list[tuple[str, str, str, str]]:
        """(customer, step, channel, what the peer received) of the journey's sends, by customer, in order.

        What was received is told by its subject, SMS text, push title, audience action or
        webhook type; a send no peer received says its status and error instead.
        """
        received = self.received()
        sends = [(row.customer, row.step, row.channel, _what(row, received.get(row.key)))
                 for row in self.rows() if row.journey == journey_id]
        return sorted(sends, key=lambda send: send[0])  # stable: in order of sending per customer

    def got(self, journey_id: str, customer: str, step: str) -> Any:
        """The email or HTTP request a peer received for the customer at the journey's step."""
        [row] = [r for r in self.rows() if (r.journey, r.customer, r.step) == (journey_id, customer, step)]
        [(_, got)] = self.received()[row.key]
        return got

    def assert_delivered(self, held: int = 0) -> None:
        """Every delivery, whatever journey made it, is ``sent`` with the provider's id and reached
        its peer exactly once, and nothing else reached a peer; except ``held`` ones, which reached
        none. Every email is addressed and greeted, and has a one-click unsubscribe link if it is
        marketing (none if it is not)."""
        rows = [row for row in self.rows() if row.status != "held"]
        assert len(self.rows()) - len(rows) == held
        assert [row for row in rows if row.status != "sent"] == []
        received = self.received()
        assert sorted(received) == sorted(row.key for row in rows)
        provider_ids = {"sms": SMS_SID, "push": PUSH_NAME, "retargeting": AUDIENCE_OP}
        for row in rows:
            assert [channel for channel, _ in received[row.key]] == [row.channel], row
            expected = message_id(row.key, DOMAIN) if row.channel == "email" else provider_ids.get(row.channel, row.key)
            assert row.provider_id == expected, row
            if row.channel == "email":
                _check_email(row, received[row.key][0][1])
        emails = sum(row.channel == "email" for row in rows)
        # Every connection logged in with the URL's credentials; a thread keeps its connection.
        logins = self.peers.smtp.logins
        assert (set(logins), len(logins) <= emails) == ({("user", "secret")} if emails else set(), True)

    def enrollments(self, journey_id: str) -> dict[str, list[str]]:
        """The statuses of the journey's enrollments, by customer."""
        with self.services.sessions() as session:
            found = session.execute(
                select(Customer.external_id, Enrollment.status).join(Customer, Customer.id == Enrollment.customer_id)
                .where(Enrollment.journey_id == journey_id).order_by(Enrollment.started_at)
            ).all()
        statuses: dict[str, list[str]] = defaultdict(list)
        for customer, status in found:
            statuses[customer].append(status)
        return dict(statuses)

    def print_trace(self) -> None:
        """Print every enrollment's trace (pytest shows it when the test fails)."""
        with self.services.sessions() as session:
            rows = session.execute(
                select(TraceEntry.enrollment_id, TraceEntry.at, TraceEntry.step, TraceEntry.what,
                       TraceEntry.value, TraceEntry.error).order_by(TraceEntry.id)
            ).all()
        print("\n".join(" | ".join(str(part) for part in row) for row in rows))

    def explained(self, expected: list[Any]) -> list[Any]:
        """``expected``, which prints the trace when a comparison with it fails."""
        shipped = self

        class Explained(list):  # type: ignore[type-arg]
            def __eq__(self, other: object) -> bool:
                equal = list.__eq__(self, other)
                if equal is not True:
                    shipped.print_trace()
                return equal

            __hash__ = None  # type: ignore[assignment]

        return Explained(expected)

    def traits(self, customer: str) -> dict[str, Any]:
        with self.services.sessions() as session:
            return dict(session.execute(select(Customer.traits).where(Customer.external_id == customer)).scalar_one())


@pytest.fixture
def shipped(tmp_path: Path, pg_url: str, redis_namespace: str, peers: Peers) -> Iterator[Shipped]:
    """Given every shipped journey deployed on PostgreSQL and Redis, a worker, and the channels at the peers."""
    clock = VirtualClock(datetime(2024, 5, 6, tzinfo=timezone.utc))
    services = make_services(
        pg_url, ChannelSettings.from_env(peers.environment()), redis_url=REDIS_URL, namespace=redis_namespace,
        public_url=PUBLIC_URL, secret="s" * 32,
    )
    services.clock = clock
    journeys = tmp_path / "journeys"
    shutil.copytree(JOURNEYS, journeys)
    nps = journeys / "nps_survey.yaml"
    source = nps.read_text(encoding="utf-8")
    assert source.count(DETRACTOR_HOOK) == 1
    nps.write_text(source.replace(DETRACTOR_HOOK, f"{peers.webhook.url}/hooks/nps-detractor"), encoding="utf-8")
    with services.sessions.begin() as session:
        snapshots = [deploy.snapshot(path) for path in sorted(journeys.glob("*.yaml"))]
        deploy.deploy(session, snapshots, datetime.now(timezone.utc))
    assert len(snapshots) == len(list(JOURNEYS.glob("*.yaml"))) == 7
    key = create_key(services)
    worker = dramatiq.Worker(services.broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        with TestClient(create_app(services)) as client:
            auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
            yield Shipped(services, peers, clock, client, auth)
    finally:
        worker.stop()
        services.close()


# -- what the peers received, journey by journey ------------------------------------------


def test_welcome_series(shipped: Shipped):
    shipped.replay("welcome_series")

    assert shipped.sends("welcome_series") == [
        ("ada", "welcome", "email", "Welcome, Ada!"),
        ("ada", "tips", "email", "More shoes you might like"),
        ("grace", "welcome", "email", "Welcome, Grace!"),
        ("grace", "email_nudge", "email", "Grace, here is what is new this week"),
        ("hedy", "welcome", "email", "Welcome, Hedy!"),
        ("hedy", "push_nudge", "push", "Hi Hedy"),
        ("linus", "welcome", "email", "Welcome, Linus!"),
    ]
    welcome = shipped.got("welcome_series", "ada", "welcome")
    assert welcome.get_content_type() == "multipart/alternative"
    assert "for the free plan" in welcome.get_body(("plain",)).get_content()
    assert welcome.get_body(("html",)).get_content().startswith("<p>Hi Ada,</p>")
    push = shipped.got("welcome_series", "hedy", "push_nudge")
    assert push.path == "/v1/projects/shop/messages:send"
    assert push.headers["authorization"] == "Bearer push-token"
    key = push.json()["message"]["data"]["idempotency_key"]
    assert push.json() == {"message": {
        "token": "fcm-hedy-1",
        "notification": {"title": "Hi Hedy", "body": "Your first look at the new collection is one tap away."},
        "data": {"idempotency_key": key, "journey_id": "welcome_series", "step_id": "push_nudge"},
    }}
    assert shipped.enrollments("welcome_series") == {
        "ada": ["completed"], "grace": ["completed"], "hedy": ["completed"], "linus": ["converted"]}
    shipped.assert_delivered()

    # The List-Unsubscribe link works: one click and the topic is off for that customer.
    link = welcome["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC_URL)
    answer = shipped.client.post(link, content=b"List-Unsubscribe=One-Click",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200, answer.text
    with shipped.services.sessions() as session:
        consent = session.execute(select(Consent.channel, Consent.topic, Consent.subscribed)).all()
    assert consent == [("email", "onboarding", False)]


def test_cart_abandonment(shipped: Shipped):
    shipped.replay("cart_abandonment")

    # Due at 07:30 in New York, grace's reminder waits out quiet hours until 08:00, the
    # instant she orders. Events go before timers and deferred sends of the same instant
    # (docs/runtime.md): her order converts the enrollment first, so the reminder is held,
    # and she was never in the audience, so nothing takes her out of it.
    assert shipped.sends("cart_abandonment") == shipped.explained([
        ("ada", "reminder", "email", "Ada, your cart is waiting"),
        ("ada", "retarget", "retargeting", "add cart_abandoners"),
        ("ada", "leave_audience", "retargeting", "remove cart_abandoners"),  # 7 days and no order
        ("grace", "reminder", "email", "nothing received: held the enrollment converted at "
                                       "2024-05-06T12:00:00+00:00 while this send waited"),  # unsent: last
        ("linus", "reminder", "email", "Linus, your cart is waiting"),
        ("linus", "discount", "email", "10% off the cart you left, Linus"),
        ("linus", "retarget", "retargeting", "add cart_abandoners"),
        ("linus", "retarget", "retargeting", "remove cart_abandoners"),  # the order: out of what it joined
    ])
    with shipped.services.sessions() as session:
        deferred = session.execute(select(Delivery.not_before).where(Delivery.not_before.is_not(None))).scalars().all()
    assert deferred == [_at("2024-05-06T12:00:00Z")]
    reminder = shipped.got("cart_abandonment", "ada", "reminder").get_body(("plain",)).get_content()
    assert "You left 2 items worth 120.5 EUR in your cart." in reminder
    linus = [r for r in shipped.peers.audience.requests if _member(r) == _sha256("linus@example.com")]
    assert [r.json()["action"] for r in linus] == ["add", "remove"]
    for request in linus:
        assert request.path == "/audiences/cart_abandoners/members"
        assert request.headers["authorization"] == "Bearer audience-token"
        assert request.json()["members"] == [
            {"email_sha256": _sha256("linus@example.com"), "external_id_sha256": _sha256("linus")}]
    # margaret checked out anonymously, then identified and ordered: one customer, converted,
    # and no reminder (she has no line in the sends above).
    assert shipped.enrollments("cart_abandonment") == {
        "ada": ["completed"], "grace": ["converted"], "linus": ["converted"], "margaret": ["converted"]}
    shipped.assert_delivered(held=1)


def test_order_followup(shipped: Shipped):
    shipped.replay("order_followup")

    assert shipped.sends("order_followup") == [
        ("ada", "thank_you", "email", "Thank you for your order o-1001"),
        ("ada", "review_request", "email", "How is your order, Ada?"),
        ("grace", "thank_you", "email", "Thank you for your order o-2001"),
        ("linus", "thank_you", "email", "Thank you for your order o-3001"),
    ]
    thanks = shipped.got("order_followup", "ada", "thank_you").get_body(("plain",)).get_content()
    assert "Thank you for your order o-1001 (2 items, 89.90 EUR)." in thanks
    assert shipped.enrollments("order_followup") == {"ada": ["completed"], "grace": ["exited"], "linus": ["completed"]}
    shipped.assert_delivered()


def test_loyalty_points(shipped: Shipped):
    shipped.replay("loyalty_points")

    assert shipped.sends("loyalty_points") == [("ada", "tier_notice", "email", "You are now a gold member, Ada")]
    notice = shipped.got("loyalty_points", "ada", "tier_notice")
    assert "With 1050 points you have reached the gold tier" in notice.get_body(("plain",)).get_content()
    assert "List-Unsubscribe" not in notice  # an account message, not marketing
    assert shipped.traits("ada")["tier"] == "gold"
    shipped.assert_delivered()


def test_referral_rewards(shipped: Shipped):
    shipped.replay("referral_rewards")

    assert shipped.sends("referral_rewards") == [
        ("grace", "thanks", "email", "500 points for you, Grace"),
        ("linus", "thanks", "email", "500 points for you, Linus"),
    ]
    assert "List-Unsubscribe" not in shipped.got("referral_rewards", "grace", "thanks")
    # ada's code came as a trait (given out before the engine): she is grace's referrer;
    # linus's code is nobody's, so only he is rewarded
    with shipped.services.sessions() as session:
        points = dict(session.execute(
            select(Customer.external_id, func.sum(PointsEntry.amount))
            .join(Customer, Customer.id == PointsEntry.customer_id).group_by(Customer.external_id)
        ).all())
    assert points == {"ada": 500, "grace": 500, "linus": 500}
    shipped.assert_delivered()


def test_nps_survey(shipped: Shipped):
    shipped.replay("nps_survey")

    assert shipped.sends("nps_survey") == [
        ("ada", "survey", "email", "One question, Ada"),
        ("ada", "referral_ask", "email", "Share the love, Ada"),
        ("grace", "survey", "email", "One question, Grace"),
        ("grace", "detractor", "webhook", "nps_detractor"),
        ("linus", "survey", "email", "One question, Linus"),
    ]
    code = shipped.traits("ada")["referral_code"]
    ask = shipped.got("nps_survey", "ada", "referral_ask").get_body(("plain",)).get_content()
    assert f"Give friends your code {code}:" in ask
    hook = shipped.got("nps_survey", "grace", "detractor")
    assert hook.path == "/hooks/nps-detractor"
    assert hook.headers["content-type"] == "application/json"
    assert standardwebhooks.Webhook(WEBHOOK_SECRET).verify(hook.body, hook.headers) == {
        "type": "nps_detractor", "customer_id": "grace", "email": "grace@example.com",
        "score": 3, "comment": "Late delivery", "order_id": "o-2001",
    }
    assert shipped.enrollments("nps_survey") == {"ada": ["completed"], "grace": ["completed"], "linus": ["completed"]}
    shipped.assert_delivered()


def test_winback(shipped: Shipped):
    shipped.replay("winback")

    text = "Ada, your 15% code COMEBACK15 ends tomorrow. Reply STOP to opt out."
    assert shipped.sends("winback") == [
        ("ada", "offer", "email", "We miss you, Ada: 15% off your next order"),
        ("ada", "last_chance", "sms", text),
        ("grace", "offer", "email", "We miss you, Grace: 15% off your next order"),
    ]
    sms = shipped.got("winback", "ada", "last_chance")
    assert sms.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert sms.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:sms-token").decode()
    assert sms.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sms.body.decode()) == {"To": ["+447700900123"], "From": ["+14155550100"], "Body": [text]}
    assert shipped.enrollments("winback") == {"ada": ["exited", "completed"], "grace": ["converted"]}
    shipped.assert_delivered()


# -- helpers ------------------------------------------------------------------------------


def _check_email(row: Row, email: Any) -> None:
    assert email["From"] == SENDER, row
    assert email["To"] == f"{row.customer}@example.com", row
    assert email.get_body(("plain",)).get_content().startswith(f"Hi {row.customer.capitalize()},"), row
    if row.kind == "marketing":
        assert email["List-Unsubscribe"].startswith(f"<{PUBLIC_URL}/u/"), row
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click", row
    else:
        assert "List-Unsubscribe" not in email and "List-Unsubscribe-Post" not in email, row


def _what(row: Row, received: list[tuple[str, Any]] | None) -> str:
    if not received:
        return f"nothing received: {row.status} {row.error}"
    got = received[0][1]
    if row.channel == "email":
        return str(got["Subject"])
    if row.channel == "sms":
        return parse_qs(got.body.decode())["Body"][0]
    if row.channel == "push":
        return got.json()["message"]["notification"]["title"]
    if row.channel == "retargeting":
        return f"{got.json()['action']} {got.path.split('/')[2]}"
    return standardwebhooks.Webhook(WEBHOOK_SECRET).verify(got.body, got.headers)["type"]


def _member(request: Recorded) -> str:
    return request.json()["members"][0]["email_sha256"]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


