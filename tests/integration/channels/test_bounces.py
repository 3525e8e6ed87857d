"""A real adapter's bounce suppresses the address (``engine.policy.record_bounce``), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from channels import Message, Recipient, Result
from channels.email import EmailChannel
from channels.settings import SmtpServer
from channels.sms import SmsChannel
from engine.policy import record_bounce
from engine.services import Services
from engine.storage.models import Customer, Delivery, Suppression
from tests.integration.channels.peers import HttpPeer, Reply, SmtpPeer
from tests.unit.test_policy import NOON, deliverer, make_world

pytestmark = pytest.mark.integration

LATER = NOON + timedelta(hours=1)


def add_delivery(services: Services, customer_id: int, channel: str, key: str) -> int:
    with services.sessions.begin() as session:
        row = Delivery(key=key, enrollment_id="e-1", customer_id=customer_id, journey_id="nps_survey", version=1,
                       step="survey", channel=channel, template="nps_survey", kind="transactional", topic="surveys",
                       created_at=NOON, updated_at=NOON)
        session.add(row)
        session.flush()
        return row.id


def record(services: Services, delivery_id: int, result: Result, address: str | None = None) -> Suppression | None:
    """What the deliverer does with a failed send's result, in the transaction that records it."""
    with services.sessions.begin() as session:
        delivery = session.get(Delivery, delivery_id)
        customer = session.get(Customer, delivery.customer_id)
        return record_bounce(session, delivery, customer, result, LATER, address=address)


def suppressions(services: Services) -> list[tuple[str, str | None, int | None, str]]:
    with services.sessions() as session:
        rows = session.execute(select(Suppression.channel, Suppression.address, Suppression.customer_id,
                                      Suppression.reason).order_by(Suppression.id)).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def email_to(address: str, key: str) -> Message:
    return Message("email", key, Recipient("ada", email=address), content={"subject": "Your receipt", "text": "Thanks"})


def test_an_smtp_550_user_unknown_suppresses_the_address_and_the_next_send_is_held(
        any_services: Services, smtp: SmtpPeer) -> None:
    # Given Ada, whose mailbox no longer exists
    services, customer_id, stub = make_world(any_services, "UTC")
    first = add_delivery(services, customer_id, "email", "d-1")
    smtp.mailbox.refuse("550 5.1.1 <ada@example.com>: No such user", "550 5.1.1 <ada@example.com>: No such user")
    email = EmailChannel(SmtpServer(smtp.host, smtp.port), "Shop <news@shop.example>", timeout=5)

    # When a real SMTP server answers 550 5.1.1 and the result is recorded
    result = email.send(email_to("Ada@Example.com", "d-1"))
    entry = record(services, first, result, address="Ada@Example.com")

    # Then her address is on the email list as a hard bounce, with the server's words
    assert (result.status, result.bounce) == ("permanent", True)
    assert entry is not None
    assert (entry.channel, entry.address, entry.customer_id, entry.reason) == (
        "email", "ada@example.com", None, "hard_bounce")
    assert entry.note is not None and "550 5.1.1 <ada@example.com>: No such user" in entry.note
    assert f"delivery {first}, journey nps_survey, customer 'ada'" in entry.note
    # and a second bounce of the same address finds the same entry
    again = record(services, first, email.send(email_to("ada@example.com", "d-1")))
    assert again is not None and again.id == entry.id
    assert suppressions(services) == [("email", "ada@example.com", None, "hard_bounce")]
    # and the next email to her, transactional too, is held without reaching the adapter
    second = add_delivery(services, customer_id, "email", "d-2")
    outcome = deliverer(services).deliver(second, LATER)
    assert (outcome.status, outcome.error) == ("held", "suppressed: hard bounce on email")
    assert stub.attempts == []
    email.close()


def test_a_permanent_refusal_that_is_not_about_the_address_suppresses_nothing(
        any_services: Services, smtp: SmtpPeer) -> None:
    services, customer_id, _ = make_world(any_services, "UTC")
    delivery = add_delivery(services, customer_id, "email", "d-1")
    smtp.mailbox.refuse("554 5.7.1 Message rejected as spam")
    email = EmailChannel(SmtpServer(smtp.host, smtp.port), "Shop <news@shop.example>", timeout=5)

    result = email.send(email_to("ada@example.com", "d-1"))

    assert result.status == "permanent" and not result.bounce
    assert record(services, delivery, result) is None
    assert record(services, delivery, Result.sent("id-1")) is None
    assert suppressions(services) == []
    email.close()


def test_an_invalid_number_suppresses_the_phone_trait(any_services: Services, peer: HttpPeer) -> None:
    services, customer_id, _ = make_world(any_services, "UTC")
    with services.sessions.begin() as session:
        customer = session.get(Customer, customer_id)
        customer.traits = {**customer.traits, "phone": "+14155550123"}
    delivery = add_delivery(services, customer_id, "sms", "d-1")
    peer.reply(Reply(400, {"code": 21211, "message": "The 'To' number +14155550123 is not a valid phone number."}))
    sms = SmsChannel(peer.url, "AC0001", "auth-token", "+14155550100", timeout=5)

    result = sms.send(Message("sms", "d-1", Recipient("ada", phone="+14155550123"), content={"text": "Hi"}))
    entry = record(services, delivery, result)  # no address given: the customer's phone trait

    assert entry is not None and (entry.channel, entry.address, entry.reason) == ("sms", "+14155550123", "hard_bounce")
    assert suppressions(services) == [("sms", "+14155550123", None, "hard_bounce")]
    sms.close()


def test_a_bounce_without_an_address_to_suppress_does_nothing(any_services: Services) -> None:
    services, customer_id, _ = make_world(any_services, "UTC")
    bounce = Result.permanent("gone", bounce=True)
    webhook = add_delivery(services, customer_id, "webhook", "d-1")
    push = add_delivery(services, customer_id, "push", "d-2")

    assert record(services, webhook, bounce) is None  # a webhook has no address of the customer's
    assert record(services, push, bounce) is None  # Ada has no push token
    assert suppressions(services) == []
