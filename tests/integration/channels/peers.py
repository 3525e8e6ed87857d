"""Real peers on loopback for the channel adapters: a recording HTTP server and an SMTP server.

Each peer records what it receives and answers what the test scripts; both stop when
their fixture ends, and a stalled answer waits at most a few seconds.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

#: The longest a stalled answer waits before giving up on its own.
STALL_LIMIT = 5.0


@dataclass
class Recorded:
    """One HTTP request as the peer received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the peer answers: a status, JSON or raw body, headers; ``stall`` waits first."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False


class HttpPeer:
    """A small real HTTP server that records requests and answers scripted replies."""

    def __init__(self, host: str = "127.0.0.1", default: Reply | None = None) -> None:
        self.host = host
        self.default = default or Reply()
        self.requests: list[Recorded] = []
        self._replies: list[Reply] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = STALL_LIMIT

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                reply = peer._record(Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if reply.stall:
                    peer._released.wait(STALL_LIMIT)
                data = (reply.body if isinstance(reply.body, bytes)
                        else b"" if reply.body is None else json.dumps(reply.body).encode())
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.body is not None and not isinstance(reply.body, bytes):
                        self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test); nothing to answer

            do_GET = do_POST  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, free_port_on(host)), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    def reply(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order, then the default again."""
        with self._lock:
            self._replies.extend(replies)

    def _record(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._replies.pop(0) if self._replies else self.default

    def start(self) -> HttpPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STALL_LIMIT)


def free_port_on(host: str) -> int:
    """A free port on ``host`` (another loopback address than 127.0.0.1 included)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_peer(host: str = "127.0.0.1", default: Reply | None = None) -> Iterator[HttpPeer]:
    """Start a peer, yield it, stop it: the body of the fixtures."""
    peer = HttpPeer(host, default).start()
    try:
        yield peer
    finally:
        peer.stop()


class Mailbox:
    """An aiosmtpd handler that keeps every message and can refuse the next ones,
    their sender (MAIL FROM) or their recipient (RCPT TO)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Any] = []
        self._replies: list[str] = []
        self._sender_replies: list[str] = []
        self._recipient_replies: list[str] = []

    def refuse(self, *replies: str) -> None:
        """Answer the next DATA commands with ``replies`` such as ``451 4.3.0 Try later``."""
        self._replies.extend(replies)

    def refuse_senders(self, *replies: str) -> None:
        """Answer the next MAIL FROM commands with ``replies`` such as ``553 5.1.8 Bad sender``."""
        self._sender_replies.extend(replies)

    def refuse_recipients(self, *replies: str) -> None:
        """Answer the next RCPT TO commands with ``replies`` such as ``550 No such user``."""
        self._recipient_replies.extend(replies)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if self._sender_replies:
            return self._sender_replies.pop(0)
        envelope.mail_from, envelope.mail_options = address, options
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if self._recipient_replies:
            return self._recipient_replies.pop(0)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's naming)
        if self._replies:
            return self._replies.pop(0)
        self.envelopes.append(envelope)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 2.0.0 Ok: queued"


@dataclass
class SmtpPeer:
    """A running aiosmtpd server on loopback and the mailbox behind it."""

    host: str
    port: int
    mailbox: Mailbox
    logins: list[tuple[str, str]]


def smtp_peer(**options: Any) -> Iterator[SmtpPeer]:
    """Start an aiosmtpd controller on loopback (logins accepted if they are user/secret)."""
    mailbox = Mailbox()
    logins: list[tuple[str, str]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if isinstance(data, LoginPassword):
            logins.append((data.login.decode(), data.password.decode()))
            ok = (data.login, data.password) == (b"user", b"secret")
            # handled=False: aiosmtpd itself answers 535 to a refused login.
            return AuthResult(success=ok, handled=False)
        return AuthResult(success=False, handled=False)

    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port_on("127.0.0.1"), authenticator=authenticate,
                            auth_require_tls=False, **options)
    controller.start()
    try:
        yield SmtpPeer("127.0.0.1", controller.port, mailbox, logins)
    finally:
        controller.stop()


#: What the peers standing for the providers answer, and the channel settings that reach them.
SENDER, DOMAIN = "Shop <news@shop.example>", "shop.example"
SMS_SID = "SM0123456789abcdef0123456789abcdef"
PUSH_NAME = "projects/shop/messages/0:1500415314455276"
AUDIENCE_OP = "op_1"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Peers:
    """The peer behind each channel: aiosmtpd, and HTTP servers for the SMS, push, audience and webhook APIs."""

    smtp: SmtpPeer
    sms: HttpPeer
    push: HttpPeer
    audience: HttpPeer
    webhook: HttpPeer

    def environment(self) -> dict[str, str]:
        """The channel settings pointing at these peers, as an operator would set them."""
        return {
            "CHANNEL_TIMEOUT": "5s",
            "SMTP_URL": f"smtp://user:secret@{self.smtp.host}:{self.smtp.port}",
            "EMAIL_FROM": SENDER,
            "SMS_API_URL": self.sms.url, "SMS_ACCOUNT_SID": "AC123", "SMS_AUTH_TOKEN": "sms-token",
            "SMS_FROM": "+14155550100",
            "PUSH_API_URL": self.push.url, "PUSH_PROJECT_ID": "shop", "PUSH_ACCESS_TOKEN": "push-token",
            "AUDIENCE_API_URL": self.audience.url, "AUDIENCE_API_TOKEN": "audience-token",
            "WEBHOOK_SECRET": WEBHOOK_SECRET, "WEBHOOK_TIMEOUT": "5s", "WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
        }


@contextmanager
def provider_peers() -> Iterator[Peers]:
    """Start an SMTP peer and four HTTP peers answering as their providers do; stop them after."""
    with ExitStack() as stack:
        def http(answer: Reply) -> HttpPeer:
            return stack.enter_context(contextmanager(http_peer)("127.0.0.1", answer))

        yield Peers(
            smtp=stack.enter_context(contextmanager(smtp_peer)()),
            sms=http(Reply(201, {"sid": SMS_SID, "status": "queued"})),
            push=http(Reply(200, {"name": PUSH_NAME})),
            audience=http(Reply(200, {"id": AUDIENCE_OP})),
            webhook=http(Reply(204)),
        )
