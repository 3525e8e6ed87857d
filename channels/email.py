"""Email over SMTP with :mod:`smtplib`: text and HTML alternatives, one-click unsubscribe.

Every message carries a ``Message-ID`` made from its idempotency key, so the copy a
retry sends has the same id as the first and mail systems can tell them apart from a
new message. With an ``unsubscribe_url`` in the metadata it carries ``List-Unsubscribe``
and, for an https URL, RFC 8058's ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
(the receiving mailbox POSTs to the URL; RFC 8058 also wants both headers covered by a
DKIM signature, which is the SMTP relay's job).

A permanent refusal that says the recipient's address is bad is a bounce
(:func:`is_hard_bounce`), so the engine suppresses the address.

One connection per message: simple and thread-safe; a pool is a possible optimisation.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
import time
import weakref
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from urllib.parse import urlsplit

from channels.base import Channel, Message, Result
from channels.settings import ChannelSettings, SmtpServer

#: Characters kept as they are in a Message-ID's left part; the rest are written =XX.
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
#: An RFC 3463 enhanced status code at the start of a reply's text: ``5.1.1``.
_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def message_id(idempotency_key: str, domain: str) -> str:
    """A Message-ID unique to the key: ``<enr-1=3As2=3A1@example.com>`` for ``enr-1:s2:1``.

    The key is escaped, not hashed, so the id reads back to the delivery it came from.
    """
    left = "".join(c if c in _KEPT else "".join(f"={b:02X}" for b in c.encode()) for c in idempotency_key)
    return f"<{left}@{domain}>"


class EmailChannel(Channel):
    """Sends ``subject`` with ``text`` and/or ``html`` to ``recipient.email`` over SMTP.

    Each thread keeps its SMTP connection for its next send (at most ``KEEP_IDLE``
    seconds idle): a ``NOOP`` checks it before the next message, and a connection that
    does not answer 250 is closed and a new one opened, so a message is never started on
    a connection the server dropped. A connection that saw an error is closed.
    """

    #: Seconds an idle connection is kept for the thread's next send.
    KEEP_IDLE = 30.0

    name = "email"
    requires = ("email",)
    requires_content = ("subject", ("text", "html"))
    parts = ("subject", "text", "html")

    def __init__(self, server: SmtpServer, sender: str, *, timeout: float = 10.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self._server = server
        self._sender = sender
        self._domain = parseaddr(sender)[1].rpartition("@")[2]
        self._timeout = timeout
        self._tls = tls_context or ssl.create_default_context()
        self._kept = threading.local()  # this thread's idle connection and since when
        self._idle: set[smtplib.SMTP] = set()  # the connections kept, not in use: close() says goodbye on them
        self._idle_lock = threading.Lock()
        # A channel dropped without close() still says goodbye on what it kept.
        weakref.finalize(self, _quit_all, self._idle)

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> EmailChannel:
        """Build it from ``SMTP_URL``, ``EMAIL_FROM`` and ``CHANNEL_TIMEOUT``."""
        settings.require("email", smtp="SMTP_URL", email_from="EMAIL_FROM")
        return cls(settings.smtp, settings.email_from,  # type: ignore[arg-type]  # require() checked them
                   timeout=settings.timeout.total_seconds())

    def check(self, message: Message) -> str | None:
        problem = super().check(message)
        if problem is None:
            address = str(message.recipient.email)
            if not _is_address(address):
                return f"{address!r} is not an email address; fix the customer's email trait"
        return problem

    def build(self, message: Message) -> EmailMessage:
        """The email as it goes on the wire."""
        content = message.content
        email = EmailMessage()
        email["From"] = self._sender
        email["To"] = str(message.recipient.email)
        email["Subject"] = " ".join(str(content["subject"]).split())
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = message_id(message.idempotency_key, self._domain)
        unsubscribe = message.metadata.get("unsubscribe_url")
        if unsubscribe:
            email["List-Unsubscribe"] = f"<{unsubscribe}>"
            if urlsplit(str(unsubscribe)).scheme == "https":  # RFC 8058 asks for an HTTPS URI
                email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        text, html = content.get("text"), content.get("html")
        if text:
            email.set_content(str(text))
            if html:
                email.add_alternative(str(html), subtype="html")
        else:
            email.set_content(str(html), subtype="html")
        return email

    def deliver(self, message: Message) -> Result:
        email = self.build(message)
        where = f"the SMTP server {self._server.host}:{self._server.port}"
        try:
            smtp = self._connection()
            try:
                smtp.send_message(email)
            except BaseException:
                _quit(smtp)
                raise
            self._keep(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            return _reply_result(code, reply, f"{where} refused {email['To']}", stage="recipient")
        except smtplib.SMTPSenderRefused as exc:
            return _reply_result(exc.smtp_code, exc.smtp_error, f"{where} refused the sender {exc.sender}",
                                 stage="sender")
        except smtplib.SMTPResponseException as exc:
            return _reply_result(exc.smtp_code, exc.smtp_error, f"{where} refused the message")
        except smtplib.SMTPNotSupportedError as exc:
            return Result.permanent(f"{where} does not support what SMTP_URL asks for: {exc}")
        except ssl.SSLCertVerificationError as exc:
            return Result.permanent(f"{where} has a TLS certificate that does not verify: {exc.verify_message}")
        except (smtplib.SMTPException, OSError) as exc:
            return Result.retryable(f"cannot reach {where}: {exc or type(exc).__name__}")
        return Result.sent(str(email["Message-ID"]))

    def close(self) -> None:
        """Say goodbye on the connections kept; one in use is closed by its thread after its send."""
        super().close()
        with self._idle_lock:
            _quit_all(self._idle)

    def _connection(self) -> smtplib.SMTP:
        """This thread's kept connection if it still answers, else a new one."""
        held = getattr(self._kept, "smtp", None)
        self._kept.smtp = None
        if held is not None:
            smtp, since = held
            with self._idle_lock:
                mine = smtp in self._idle  # not closed by close() meanwhile
                self._idle.discard(smtp)
            try:
                if mine and time.monotonic() - since < self.KEEP_IDLE and smtp.noop()[0] == 250:
                    return smtp
            except (smtplib.SMTPException, OSError):
                pass
            _quit(smtp)
        return self._connect()

    def _keep(self, smtp: smtplib.SMTP) -> None:
        with self._idle_lock:
            if not self._closed:
                self._idle.add(smtp)
                self._kept.smtp = (smtp, time.monotonic())
                return
        _quit(smtp)

    def _connect(self) -> smtplib.SMTP:
        server = self._server
        smtp: smtplib.SMTP
        if server.security == "tls":
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=self._timeout, context=self._tls)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=self._timeout)
        try:
            if server.security == "starttls":
                smtp.starttls(context=self._tls)
            if server.username:
                smtp.login(server.username, server.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


def _quit_all(connections: set[smtplib.SMTP]) -> None:
    for smtp in list(connections):
        connections.discard(smtp)
        _quit(smtp)


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye; once the message is accepted, a failing QUIT must not turn it into a failure."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _is_address(text: str) -> bool:
    if any(c in text for c in "\r\n<>,") or text.count("@") != 1:
        return False
    local, domain = text.split("@")
    try:
        Address(username=local, domain=domain)
    except (ValueError, IndexError):
        return False
    return bool(local) and "." in domain


def is_hard_bounce(code: int, text: str, *, at_recipient: bool) -> bool:
    """Whether an SMTP refusal says the recipient's address is bad (a hard bounce).

    An enhanced status code decides when the reply has one: ``5.1.x`` (bad mailbox, bad
    domain, bad syntax, moved...) except ``5.1.7``/``5.1.8``, which are about the sender.
    Without one, a refusal of the recipient itself (at ``RCPT TO``) with 550, 551 or 553
    counts, unless the reply speaks of relaying: that is the relay's configuration, not
    the address, and must not suppress every recipient.

    Args:
        code: the reply code (``550``).
        text: the reply's text, after the code (``5.1.1 No such user``).
        at_recipient: the server refused the ``RCPT TO`` command, not the message.
    """
    if not 500 <= code < 600:
        return False
    enhanced = _ENHANCED.match(text)
    if enhanced is not None:
        kind, subject, detail = enhanced.groups()
        return kind == "5" and subject == "1" and detail not in ("7", "8")
    return at_recipient and code in (550, 551, 553) and "relay" not in text.lower()


def _reply_result(code: int, reply: bytes | str, what: str, *, stage: str = "message") -> Result:
    """SMTP replies: 4xx is a temporary failure (retry), 5xx a permanent one.

    ``stage`` is what the server refused: the ``sender`` (never a bounce: our own
    address), the ``recipient`` or the ``message``.
    """
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    error = f"{what}: {code} {text}"
    if 500 <= code < 600:
        bounce = stage != "sender" and is_hard_bounce(code, text, at_recipient=stage == "recipient")
        return Result.permanent(error, bounce=bounce, smtp_code=code)
    return Result.retryable(error, smtp_code=code)
