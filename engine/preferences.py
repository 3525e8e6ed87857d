"""The suppression list and consents, as operators and providers manage them.

The policy (:mod:`engine.policy`) reads both for every send. This module is what the
admin API (``/v1/suppressions``, ``/v1/customers/{id}/consents``) and the CLI
(``journey suppress``, ``journey consent``) share: it checks a request and reports every
problem at once (a :class:`~engine.errors.PayloadError` whose problems name the field,
what is wrong and what is allowed), then adds, lists or lifts entries and returns them
as JSON-ready dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels import registry
from engine import profiles
from engine.errors import NotFoundError, PayloadError, Problem, did_you_mean
from engine.segment import whole_number
from engine.policy import (
    ADDRESS_TRAITS,
    ALL_TOPICS,
    REASONS,
    find_suppression,
    record_consent,
    suppress,
)
from engine.storage.models import Consent, Customer, Suppression
from engine.storage.paging import keyset_page

#: The channel of an entry that suppresses every channel.
EVERY_CHANNEL = "*"
#: Entries per page of a listing: by default, and at most.
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000

SUPPRESSION_FIELDS = ("channel", "address", "userId", "reason", "note")
CONSENT_FIELDS = ("channel", "topic", "subscribed", "source")
LISTING_FIELDS = ("channel", "address", "limit", "cursor")

#: Longest address or userId, note, topic and source a request may give.
ID_LENGTH, NOTE_LENGTH, TOPIC_LENGTH, SOURCE_LENGTH = 255, 1000, 100, 100
#: What an address must look like, by channel (a channel not named: no spaces).
ADDRESS_PATTERNS = {"email": r"[^@\s\x00]+@[^@\s\x00]+", "sms": r"\+?[0-9]{6,15}"}
#: The largest cursor of a listing (an id, a BIGINT).
MAX_CURSOR = 2**63 - 1

_EMAIL = re.compile(ADDRESS_PATTERNS["email"])
_PHONE = re.compile(ADDRESS_PATTERNS["sms"])


@dataclass(frozen=True)
class SuppressionRequest:
    """A checked request to put an address, or a customer, on a channel's suppression list."""

    channel: str
    reason: str
    address: str | None = None
    user_id: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ConsentRequest:
    """A checked consent choice: subscribed or not to a channel's topic (``*``: all topics)."""

    channel: str
    subscribed: bool
    topic: str = ALL_TOPICS
    source: str | None = None


@dataclass(frozen=True)
class Listing:
    """A checked listing query: filters, page size, and where the previous page ended."""

    channel: str | None = None
    address: str | None = None
    limit: int = DEFAULT_LIMIT
    before: int | None = None


def read_suppression(body: Any) -> SuppressionRequest:
    """Check a suppression request: ``{channel, address | userId, reason, note?}``.

    Raises:
        PayloadError: every problem found, each naming its field.
    """
    fields = RequestFields(body, SUPPRESSION_FIELDS, '{"channel": "email", "address": "ada@example.com", "reason": "manual"}')
    channel = fields.channel("channel", every=True)
    reason = fields.choice("reason", REASONS, f"one of {', '.join(REASONS)}")
    address = fields.text("address", ID_LENGTH)
    user_id = fields.text("userId", ID_LENGTH)
    note = fields.text("note", NOTE_LENGTH)
    if fields.fine("address", "userId"):
        if address is None and user_id is None:
            fields.problem("address", "is required: the address to suppress, or else a userId to suppress the "
                                      "customer whatever their address")
        elif address is not None and user_id is not None:
            fields.problem("userId", "give an address or a userId, not both: they are separate entries")
        elif address is not None and channel is not None:
            fields.check_address("address", channel, address)
    fields.raise_if_any("the suppression")
    return SuppressionRequest(channel, reason, address, user_id, note)  # type: ignore[arg-type]  # checked


def read_consent(body: Any) -> ConsentRequest:
    """Check a consent choice: ``{channel, topic?, subscribed, source?}``.

    Raises:
        PayloadError: every problem found, each naming its field.
    """
    fields = RequestFields(body, CONSENT_FIELDS, '{"channel": "email", "topic": "newsletter", "subscribed": false}')
    channel = fields.channel("channel", every=False)
    topic = fields.text("topic", TOPIC_LENGTH)
    source = fields.text("source", SOURCE_LENGTH)
    subscribed = body.get("subscribed")
    if subscribed is None:
        fields.problem("subscribed", "is required: true to subscribe, false to unsubscribe")
    elif not isinstance(subscribed, bool):
        fields.problem("subscribed", f"must be true or false, not {subscribed!r}")
    fields.raise_if_any("the consent")
    return ConsentRequest(channel, subscribed, topic or ALL_TOPICS, source)  # type: ignore[arg-type]  # checked


def read_listing(query: Mapping[str, Any]) -> Listing:
    """Check a listing query: ``channel``, ``address``, ``limit`` and ``cursor``, all optional.

    Raises:
        PayloadError: every problem found, each naming its parameter.
    """
    fields = RequestFields(dict(query), LISTING_FIELDS, "channel=email&limit=100", "parameter")
    channel = fields.channel("channel", every=True, required=False)
    address = fields.text("address", ID_LENGTH)
    limit = fields.whole("limit", 1, MAX_LIMIT, f"the entries per page, 1 to {MAX_LIMIT}")
    cursor = fields.cursor("cursor")
    fields.raise_if_any("the listing")
    return Listing(channel, address and address.lower(), DEFAULT_LIMIT if limit is None else limit, cursor)


def find_customer(session: Session, ident: str) -> Customer:
    """The customer known by the user id or anonymous id ``ident``.

    Raises:
        NotFoundError: nobody is known by it.
    """
    customer = profiles.find(session, ident)
    if customer is None:
        raise NotFoundError(f"no customer is known by the user id or anonymous id {ident!r}")
    return customer


def add_suppression(session: Session, wanted: SuppressionRequest, now: datetime) -> tuple[dict[str, Any], bool]:
    """Put the address or customer on the list; the entry, and False if it was there already.

    Raises:
        NotFoundError: ``userId`` names nobody.
    """
    customer = find_customer(session, wanted.user_id) if wanted.user_id is not None else None
    entry, created = suppress(session, wanted.channel, wanted.reason, now, address=wanted.address,
                              customer_id=customer.id if customer else None, note=wanted.note)
    user_id = customer.external_id if customer else _user_id(session, entry.customer_id)
    return suppression_view(entry, user_id), created


def list_suppressions(session: Session, listing: Listing) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the list, newest first; the entries, and the cursor of the next page (None: the last)."""
    query = select(Suppression, Customer.external_id).outerjoin(Customer, Customer.id == Suppression.customer_id)
    if listing.channel is not None:
        query = query.where(Suppression.channel == listing.channel)
    if listing.address is not None:
        query = query.where(Suppression.address == listing.address)
    page, cursor = keyset_page(session, query, Suppression.id, listing.limit, listing.before, newest_first=True)
    return [suppression_view(entry, user_id) for entry, user_id in page], cursor


def lift_suppression(session: Session, channel: str, *, address: str | None = None,
                     user_id: str | None = None) -> dict[str, Any]:
    """Take an address (or a customer) off a channel's list; the entry as it was.

    Raises:
        PayloadError: unknown channel, or not exactly one of address and user id.
        NotFoundError: the entry, or the customer, does not exist.
    """
    fields = RequestFields({"channel": channel}, ("channel",), "")
    fields.channel("channel", every=True)
    if (address is None) == (user_id is None):
        fields.problem("address", "name the address to lift, or else the userId of a customer entry (not both)")
    fields.raise_if_any("the suppression to lift")
    customer = find_customer(session, user_id) if user_id is not None else None
    entry = find_suppression(session, channel, address=address, customer_id=customer.id if customer else None)
    if entry is None:
        who = f"the address {address!r}" if address is not None else f"the customer {user_id!r}"
        raise NotFoundError(f"{who} is not on the suppression list of channel {channel!r}")
    view = suppression_view(entry, customer.external_id if customer else _user_id(session, entry.customer_id))
    session.delete(entry)
    session.flush()
    return view


def consents_of(session: Session, ident: str) -> dict[str, Any]:
    """The customer's recorded choices by channel and topic.

    Raises:
        NotFoundError: nobody is known by ``ident``.
    """
    customer = find_customer(session, ident)
    rows = session.execute(
        select(Consent).where(Consent.customer_id == customer.id).order_by(Consent.channel, Consent.topic)
    ).scalars()
    return {"id": customer.id, "userId": customer.external_id, "consents": [consent_view(c) for c in rows]}


def set_consent(session: Session, ident: str, wanted: ConsentRequest, now: datetime, source: str) -> dict[str, Any]:
    """Record the customer's choice as the unsubscribe link does; it applies to the next send.

    ``source`` is recorded when the request names none.

    Raises:
        NotFoundError: nobody is known by ``ident``.
    """
    customer = find_customer(session, ident)
    consent = record_consent(session, customer.id, wanted.channel, wanted.topic, wanted.subscribed,
                             wanted.source or source[:100], now)
    return consent_view(consent)


def suppression_view(entry: Suppression, user_id: str | None) -> dict[str, Any]:
    """An entry of the list as JSON."""
    return {
        "id": entry.id,
        "channel": entry.channel,
        "address": entry.address,
        "userId": user_id,
        "reason": entry.reason,
        "note": entry.note,
        "at": entry.at.isoformat(),
    }


def consent_view(consent: Consent) -> dict[str, Any]:
    """A consent choice as JSON."""
    return {
        "channel": consent.channel,
        "topic": consent.topic,
        "subscribed": consent.subscribed,
        "source": consent.source,
        "at": consent.at.isoformat(),
    }


def _user_id(session: Session, customer_id: int | None) -> str | None:
    return session.get(Customer, customer_id).external_id if customer_id is not None else None  # type: ignore[union-attr]


class RequestFields:
    """Reads the fields of one request, collecting every problem."""

    def __init__(self, body: Any, names: Sequence[str], example: str, kind: str = "field") -> None:
        if not isinstance(body, dict):
            raise PayloadError("the request", [Problem("body", f"must be a JSON object such as {example}")])
        self.body = body
        self.problems: list[Problem] = []
        for key in body:
            if key not in names:
                self.problem(str(key), _unknown(kind, key, names, f"the {kind}s are"))

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def fine(self, *names: str) -> bool:
        """Whether none of ``names`` has a problem yet."""
        return not any(p.path in names for p in self.problems)

    def raise_if_any(self, subject: str) -> None:
        if self.problems:
            raise PayloadError(subject, self.problems)

    def text(self, name: str, limit: int) -> str | None:
        """An optional string of at most ``limit`` characters, stripped; None when absent."""
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(name, f"must be a non-empty string, not {value!r}")
            return None
        if len(value) > limit:
            self.problem(name, f"is {len(value)} characters long; at most {limit} are allowed")
            return None
        if "\x00" in value:
            self.problem(name, "contains a NUL character (\\u0000), which cannot be stored; remove it")
            return None
        return value.strip()

    def cursor(self, name: str) -> int | None:
        """An optional listing cursor: the nextCursor of the previous page (an id, up to :data:`MAX_CURSOR`)."""
        value = self.body.get(name)
        if value is None:
            return None
        number = _whole(value)
        if number is None or not 0 <= number <= MAX_CURSOR:
            self.problem(name, f"{value!r} is not a cursor this list gave; pass the nextCursor of the previous page")
            return None
        return number

    def whole(self, name: str, low: int, high: int, what: str) -> int | None:
        """An optional whole number from ``low`` to ``high`` (a query string's digits too)."""
        value = self.body.get(name)
        if value is None:
            return None
        number = _whole(value)
        if number is None or not low <= number <= high:
            self.problem(name, f"must be {what}, not {value!r}")
            return None
        return number

    def choice(self, name: str, allowed: Sequence[str], what: str) -> str | None:
        value = self.body.get(name)
        if value is None:
            self.problem(name, f"is required: {what}")
        elif not isinstance(value, str) or value not in allowed:
            self.problem(name, _unknown(name, value, allowed, "use one of"))
        else:
            return value
        return None

    def channel(self, name: str, *, every: bool, required: bool = True) -> str | None:
        """An installed channel's name (or ``*`` when ``every``)."""
        value = self.body.get(name)
        installed = registry.available()
        allowed = [*installed, EVERY_CHANNEL] if every else installed
        listed = f"installed: {', '.join(installed)}" + ("; * for every channel" if every else "")
        if value is None:
            if required:
                self.problem(name, f"is required: the channel's name ({listed})")
        elif value == EVERY_CHANNEL and not every:
            self.problem(name, f"a consent is per channel: name one ({listed})")
        elif not isinstance(value, str) or value not in allowed:
            self.problem(name, _unknown("channel", value, allowed, listed))
        else:
            return value
        return None

    def check_address(self, name: str, channel: str, address: str) -> None:
        """An address the channel's trait could hold, so that the policy can match it."""
        if channel == EVERY_CHANNEL:
            return
        trait = ADDRESS_TRAITS.get(channel)
        if trait is None:
            with_address = ", ".join([*ADDRESS_TRAITS, EVERY_CHANNEL])
            self.problem(name, f"the {channel} channel sends to no address of its own; suppress the customer with "
                               f"a userId instead (channels with addresses: {with_address})")
        elif channel == "email" and not _EMAIL.fullmatch(address):
            self.problem(name, f"{address!r} is not an email address; write it like ada@example.com")
        elif channel == "sms" and not _PHONE.fullmatch(address):
            self.problem(name, f"{address!r} is not a phone number in E.164 form; write it like +14155550123, "
                               "as the customer's phone trait holds it")
        elif any(c.isspace() for c in address):
            self.problem(name, f"{address!r} has spaces; a {trait.replace('_', ' ')} has none")


def _whole(value: object) -> int | None:
    """A whole number (3 or 3.0), or a query string's ASCII digits as one; None for anything else."""
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() else None
    return whole_number(value)


def _unknown(what: str, value: object, allowed: Sequence[str], listed: str) -> str:
    """``unknown channel 'emial'. Did you mean 'email'? (installed: ...)``, or without the guess."""
    hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
    shown = f"{value!r}" if isinstance(value, str) else f"value {value!r}"
    if listed.endswith(("use one of", "are")):
        listed = f"{listed} {', '.join(allowed)}"
    return f"unknown {what} {shown}.{hint} ({listed})" if hint else f"unknown {what} {shown} ({listed})"


__all__ = [
    "ADDRESS_PATTERNS",
    "MAX_CURSOR",
    "ConsentRequest",
    "EVERY_CHANNEL",
    "Listing",
    "RequestFields",
    "SuppressionRequest",
    "add_suppression",
    "consents_of",
    "find_customer",
    "lift_suppression",
    "list_suppressions",
    "read_consent",
    "read_listing",
    "read_suppression",
    "set_consent",
]
