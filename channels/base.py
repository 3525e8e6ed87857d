"""The adapter contract: a :class:`Message` goes in, a :class:`Result` comes out.

Shaped like httpx's transports (``httpx/_transports/base.py``): one method that does the
work, :meth:`Channel.send`, and :meth:`Channel.close`. An adapter never raises for an
outcome a caller must handle (a refused address, a provider's 5xx, a missing email
address): it returns a :class:`Result` saying whether a retry may help. Exceptions are
left for bugs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from engine.errors import ChannelError

if TYPE_CHECKING:
    from channels.settings import ChannelSettings

Status = Literal["sent", "retryable", "permanent"]


#: The channels that send to an address: the :class:`Recipient` field, which is also the
#: customer trait it comes from (the address a bounce or a suppression is about).
ADDRESS_FIELDS = {"email": "email", "sms": "phone", "push": "push_token"}


@dataclass(frozen=True)
class Recipient:
    """Who a message is for: the customer's id and the addresses a channel needs.

    Attributes:
        customer_id: the engine's id of the customer: the Segment ``userId``, or for an
            anonymous customer (``anonymous``) their first ``anonymousId``.
        email: email address, for ``email`` and audiences.
        phone: phone number, ideally E.164 (``+14155550123``), for ``sms`` and audiences.
        push_token: the device's registration token, for ``push``.
        traits: the profile traits an adapter may need beyond these (audiences).
    """

    customer_id: str
    email: str | None = None
    phone: str | None = None
    push_token: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    anonymous: bool = False

    def __str__(self) -> str:
        return customer_label(self.customer_id, anonymous=self.anonymous)


def customer_label(ident: str, *, anonymous: bool = False) -> str:
    """How errors and notes name a customer: ``customer 'ada'``, ``anonymous customer 'anon-123'``."""
    return f"anonymous customer {ident!r}" if anonymous else f"customer {ident!r}"


@dataclass(frozen=True)
class Message:
    """One message to send, already rendered.

    Attributes:
        channel: the channel's name (``email``, ``sms``, ...).
        idempotency_key: derived by the engine from (enrollment, step, visit); the same
            message sent twice has the same key, and adapters hand it to providers that
            deduplicate on one (webhook-id, ``Idempotency-Key``, the email Message-ID).
        recipient: who it is for.
        content: the rendered parts: ``subject``/``text``/``html`` for email, ``text``
            for sms, ``title``/``text`` for push, ``url`` and ``body`` (JSON text or a
            mapping) for webhook, ``audience`` and ``action`` (add/remove) for retargeting.
        metadata: ``journey_id``, ``step_id``, ``topic``, ``unsubscribe_url`` (optional).
    """

    channel: str
    idempotency_key: str
    recipient: Recipient
    content: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """What became of a send.

    Attributes:
        status: ``sent``; ``retryable`` (the same send may succeed later: a timeout, a
            429, a 5xx, an SMTP 4xx); or ``permanent`` (retrying cannot help).
        provider_id: the provider's id of the message (Twilio SID, FCM name,
            Message-ID...), when sent.
        error: why it failed, in a sentence a person can act on.
        detail: extra facts for the delivery record (HTTP status, provider error code).
        retry_after: how long the provider asked us to wait (``Retry-After``), if it did.
        bounce: a permanent failure that says the address itself is bad (an SMTP 5.1.1
            "no such user", an invalid phone number, a push token of an uninstalled
            app): the engine suppresses the address (``engine.policy.record_bounce``).
    """

    status: Status
    provider_id: str | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    retry_after: timedelta | None = None
    bounce: bool = False

    @classmethod
    def sent(cls, provider_id: str | None, **detail: Any) -> Result:
        """A message the provider accepted (with its id for it, when it gave one)."""
        return cls("sent", provider_id=provider_id, detail=detail)

    @classmethod
    def retryable(cls, error: str, *, retry_after: timedelta | None = None, **detail: Any) -> Result:
        """A failure that may pass if the same message is sent again later."""
        return cls("retryable", error=error, detail=detail, retry_after=retry_after)

    @classmethod
    def permanent(cls, error: str, *, bounce: bool = False, **detail: Any) -> Result:
        """A failure that sending again cannot fix; ``bounce`` when the address is bad."""
        return cls("permanent", error=error, detail=detail, bounce=bounce)

    @property
    def ok(self) -> bool:
        """True when the message was sent."""
        return self.status == "sent"

    def raise_for_status(self) -> Result:
        """Return ``self`` if sent, else raise :class:`~engine.errors.ChannelError`.

        Raises:
            ChannelError: with ``retryable`` set from the status.
        """
        if self.ok:
            return self
        raise ChannelError(self.error or self.status, retryable=self.status == "retryable")


class Channel:
    """Base class of channel adapters.

    Subclasses set :attr:`name`, implement :meth:`deliver` and, if they hold
    connections, :meth:`close`. :meth:`send` checks that the message has what the
    channel needs (:attr:`requires`, :attr:`requires_content`) before calling
    :meth:`deliver`, so a message without an email address is a permanent failure with
    a reason, never an exception. Adapters are shared by a worker's threads: ``deliver``
    must be thread-safe.
    """

    #: The channel's name, as journey files and the entry point write it.
    name: ClassVar[str] = ""
    #: Recipient fields the channel cannot send without.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Content parts the channel needs; a tuple of names means "any one of these".
    requires_content: ClassVar[tuple[str | tuple[str, ...], ...]] = ()
    #: The parts a journey's template may render for this channel.
    parts: ClassVar[tuple[str, ...]] = ()
    #: True if the provider drops a second message with the same idempotency key: a
    #: send left ``unknown`` by a crash is then resent automatically, since it cannot
    #: arrive twice.
    deduplicates: ClassVar[bool] = False

    _closed: bool = False

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> Channel:
        """Build the adapter from the channel settings.

        Raises:
            ConfigError: a setting the adapter needs is missing (the message names it).
        """
        return cls()

    def send(self, message: Message) -> Result:
        """Send ``message`` and say what became of it; never raises for a failed send."""
        if self._closed:
            return Result.permanent(f"the {self.name} channel is closed; build a new one to send")
        problem = self.check(message)
        if problem is not None:
            return Result.permanent(problem)
        try:
            return self.deliver(message)
        except ChannelError as exc:
            return Result("retryable" if exc.retryable else "permanent", error=str(exc))

    def check(self, message: Message) -> str | None:
        """Return why ``message`` cannot be sent on this channel, or None if it can."""
        for name in self.requires:
            if not getattr(message.recipient, name, None):
                return (f"{message.recipient} has no {name.replace('_', ' ')}; "
                        f"a {self.name} message needs one")
        for need in self.requires_content:
            names = (need,) if isinstance(need, str) else need
            if not any(_present(message.content.get(n)) for n in names):
                wanted = " or ".join(f"'{n}'" for n in names)
                return f"the {self.name} message has no {wanted}; the step's template must render it"
        return None

    def deliver(self, message: Message) -> Result:
        """Send a checked message. Subclasses implement this; may raise ChannelError."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Calling it twice is harmless."""
        self._closed = True

    def __enter__(self) -> Channel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != {}


def http_result(status: int, error: str, *, retry_after: str | None = None, bounce: bool = False,
                **detail: Any) -> Result:
    """Classify a provider's HTTP error answer: 408, 429 and 5xx retryable, other 4xx permanent.

    ``bounce`` (the provider said the address is bad) counts only on a permanent failure.
    """
    detail["http_status"] = status
    if status in (408, 429) or status >= 500:
        return Result.retryable(error, retry_after=parse_retry_after(retry_after), **detail)
    return Result.permanent(error, bounce=bounce, **detail)


def parse_retry_after(value: str | None) -> timedelta | None:
    """Read a ``Retry-After`` header given in seconds; an HTTP date or junk gives None."""
    if value is None or not value.strip().isdigit():
        return None
    return timedelta(seconds=int(value.strip()))

