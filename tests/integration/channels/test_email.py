"""The email adapter against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import contextlib
import time

import pytest

from channels import Message, Recipient
from channels.email import EmailChannel
from channels.settings import SmtpServer
from tests.integration.channels.peers import SmtpPeer, free_port_on, smtp_peer

pytestmark = pytest.mark.integration


def email(key: str = "enr-1:welcome:1", **content: object) -> Message:
    return Message(
        "email", key, Recipient("cus_1", email="ada@example.com"),
        content=content or {"subject": "Welcome, Ada", "text": "Hello Ada", "html": "<p>Hello <b>Ada</b></p>"},
        metadata={"journey_id": "welcome", "step_id": "hello", "unsubscribe_url": "https://shop.example/u/tok1"},
    )


def channel_for(smtp: SmtpPeer, **server: object) -> EmailChannel:
    return EmailChannel(SmtpServer(smtp.host, smtp.port, **server), "Shop <news@shop.example>", timeout=5)  # type: ignore[arg-type]


def test_the_server_receives_text_and_html_with_unsubscribe_headers(smtp: SmtpPeer) -> None:
    result = channel_for(smtp).send(email())

    assert result.status == "sent"
    [received] = smtp.mailbox.messages
    [envelope] = smtp.mailbox.envelopes
    assert envelope.mail_from == "news@shop.example"
    assert envelope.rcpt_tos == ["ada@example.com"]
    assert received["Subject"] == "Welcome, Ada"
    assert received["From"] == "Shop <news@shop.example>"
    assert received["Message-ID"] == result.provider_id == "<enr-1=3Awelcome=3A1@shop.example>"
    assert received["List-Unsubscribe"] == "<https://shop.example/u/tok1>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.get_content_type() == "multipart/alternative"
    text = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert text is not None and text.get_content().strip() == "Hello Ada"
    assert html is not None and html.get_content().strip() == "<p>Hello <b>Ada</b></p>"


def test_a_retry_carries_the_same_message_id(smtp: SmtpPeer) -> None:
    channel = channel_for(smtp)
    smtp.mailbox.refuse("421 4.7.0 Try again later")

    first, second = channel.send(email()), channel.send(email())

    assert (first.status, second.status) == ("retryable", "sent")
    assert first.detail["smtp_code"] == 421
    assert smtp.mailbox.messages[0]["Message-ID"] == "<enr-1=3Awelcome=3A1@shop.example>"


def test_a_5xx_rejection_is_permanent_and_quotes_the_server(smtp: SmtpPeer) -> None:
    smtp.mailbox.refuse("550 5.1.1 No such user")

    result = channel_for(smtp).send(email())

    assert result.status == "permanent"
    assert "550 5.1.1 No such user" in (result.error or "")
    assert result.bounce  # 5.1.1: the mailbox does not exist


def test_a_content_rejection_is_permanent_but_not_a_bounce(smtp: SmtpPeer) -> None:
    smtp.mailbox.refuse("554 5.7.1 Message rejected as spam")

    result = channel_for(smtp).send(email())

    assert (result.status, result.bounce) == ("permanent", False)


def test_a_recipient_refused_at_rcpt_without_an_enhanced_code_is_a_bounce(smtp: SmtpPeer) -> None:
    smtp.mailbox.refuse_recipients("550 No such user here")

    result = channel_for(smtp).send(email())

    assert (result.status, result.bounce) == ("permanent", True)
    assert "refused ada@example.com: 550 No such user here" in (result.error or "")
    assert smtp.mailbox.messages == []


def test_relaying_denied_is_not_a_bounce(smtp: SmtpPeer) -> None:
    # The relay's configuration refuses every recipient: suppressing them all would be wrong.
    smtp.mailbox.refuse_recipients("550 Relaying denied")

    result = channel_for(smtp).send(email())

    assert (result.status, result.bounce) == ("permanent", False)


def test_a_refused_sender_is_never_a_bounce(smtp: SmtpPeer) -> None:
    smtp.mailbox.refuse_senders("553 5.1.3 Bad sender address syntax")

    result = channel_for(smtp).send(email())

    assert (result.status, result.bounce) == ("permanent", False)
    assert "refused the sender news@shop.example" in (result.error or "")


def test_login_with_the_credentials_from_the_url(smtp: SmtpPeer) -> None:
    result = channel_for(smtp, username="user", password="secret").send(email())

    assert result.status == "sent"
    assert smtp.logins == [("user", "secret")]


def test_wrong_credentials_are_permanent(smtp: SmtpPeer) -> None:
    result = channel_for(smtp, username="user", password="wrong").send(email())

    assert result.status == "permanent"
    assert "535" in (result.error or "")
    assert smtp.mailbox.messages == []


def test_starttls_on_a_server_without_it_is_permanent(smtp: SmtpPeer) -> None:
    result = channel_for(smtp, security="starttls").send(email())

    assert result.status == "permanent"
    assert "STARTTLS" in (result.error or "")


def test_an_unreachable_server_is_retryable() -> None:
    channel = EmailChannel(SmtpServer("127.0.0.1", free_port_on("127.0.0.1")), "news@shop.example", timeout=5)

    result = channel.send(email())

    assert result.status == "retryable"
    assert "cannot reach the SMTP server 127.0.0.1" in (result.error or "")


def test_a_text_only_email_is_a_single_part(smtp: SmtpPeer) -> None:
    channel_for(smtp).send(email(subject="Hi", text="Just text"))

    received = smtp.mailbox.messages[0]
    assert received.get_content_type() == "text/plain"
    assert received.get_content().strip() == "Just text"


def test_a_thread_sends_its_messages_on_one_connection(smtp: SmtpPeer) -> None:
    channel = channel_for(smtp, username="user", password="secret")

    results = [channel.send(email(f"enr-{n}:welcome:1")).status for n in range(3)]
    channel.close()

    assert (results, smtp.logins) == (["sent"] * 3, [("user", "secret")])


def test_a_connection_the_server_dropped_while_idle_is_replaced() -> None:
    # Given a server that hangs up on a session idle for 0.2 s, and a message sent
    with contextlib.contextmanager(smtp_peer)(timeout=0.2) as smtp:
        channel = channel_for(smtp, username="user", password="secret")
        first = channel.send(email("enr-1:welcome:1"))
        time.sleep(0.6)  # the server closes the kept connection
        # When the next message goes
        second = channel.send(email("enr-2:welcome:1"))
        # Then it is sent, on a new connection
        assert (first.status, second.status, len(smtp.logins)) == ("sent", "sent", 2)
