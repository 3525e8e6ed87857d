"""Policy across journeys: consent, suppression, frequency caps and quiet hours.

The :class:`Policy` is the :class:`~engine.delivery.Deliverer`'s policy: it is called
inside the delivery's transaction once the row is claimed, and answers ``None`` (send),
a reason (hold it back: the row becomes ``held`` with the reason as its error) or a
:class:`~engine.delivery.Defer` (quiet hours: pending again, sent at the window's end).

A delivery's ``kind`` is its send step's ``kind``, else its journey's ``policy.kind``.
Checks, in order (an audience removal passes them all: it is no message, and taking
someone out of an audience is what an unsubscribe or a suppression wants):

- suppression (every send, transactional too): the channel's address or the customer is
  on the suppression list (hard bounce, complaint, manual entry);
- consent (marketing): the customer unsubscribed from the channel, for this topic or all;
- quiet hours (marketing): the journey's quiet window, in the customer's time zone;
- frequency cap (marketing): the journey's cap, or the channel's global cap, counted
  across all journeys. The customer's row is locked first, so concurrent sends to one
  customer take turns and never exceed the cap.

The list fills itself from sends: :func:`record_bounce` suppresses the address of a send
whose adapter reported a bounce (``Result.bounce``). Operators manage the list and the
consents through :mod:`engine.preferences` (admin API and CLI).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from channels.base import ADDRESS_FIELDS, Result
from channels.retargeting import is_removal
from engine.definitions.model import FrequencyCap
from engine.delivery import Decision, Defer
from engine.deployed import DeployedJourneys
from engine.errors import ConfigError
from engine.profiles import describe, lock_customers
from engine.settings import Settings
from engine.storage.models import Consent, Customer, Delivery, Secret, Suppression

#: Topic of a consent row that covers every topic of its channel.
ALL_TOPICS = "*"
#: Suppression reasons.
REASONS = ("hard_bounce", "complaint", "manual")
# session.info keys of Policy.prefetch's cache.
_SUPPRESSIONS = "policy.suppressions"
_CONSENTS = "policy.consents"
#: The trait holding each channel's address.
ADDRESS_TRAITS = ADDRESS_FIELDS


class Policy:
    """The policy layer, built from the settings; call it as the Deliverer's policy."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], deployed: DeployedJourneys) -> None:
        self.caps = dict(settings.frequency_caps)
        self.public_url = settings.public_url
        self.sessions = sessions
        self.deployed = deployed
        self._secret = settings.secret.encode() if settings.secret else None

    def __call__(self, session: Session, delivery: Delivery, customer: Customer, now: datetime) -> Decision:
        """Decide whether ``delivery`` goes out now."""
        if is_removal(delivery.channel, delivery.content):
            # Taking someone out of an audience is what an unsubscribe or a suppression wants.
            return None
        suppressed = suppression(session, delivery.channel, customer)
        if suppressed is not None:
            return f"suppressed: {suppressed.reason.replace('_', ' ')} on {suppressed.channel}"
        if delivery.kind == "transactional":
            return None
        topic = delivery.topic or ALL_TOPICS
        if not subscribed(session, customer.id, delivery.channel, topic):
            return f"unsubscribed from {delivery.channel} topic {topic}"
        journey = self.deployed.get(delivery.journey_id, delivery.version, session).policy
        if journey.quiet_hours is not None:
            quiet = journey.quiet_hours
            until = quiet_until(now, customer_zone(customer), quiet.start, quiet.end)
            if until is not None:
                window = f"quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M} {customer_zone(customer).key}"
                if quiet.action == "drop":
                    return f"{window}: dropped"
                return Defer(until, f"{window}: deferred to {until.isoformat()}")
        cap = journey.frequency_cap or self.caps.get(delivery.channel)
        if cap is not None:
            return self._check_cap(session, delivery, customer, cap, now)
        return None

    def prefetch(self, session: Session, deliveries: Sequence[Delivery], customers: Sequence[Customer]) -> None:
        """Load the suppressions and consents a batch of deliveries needs, two queries for all.

        The cache lives in ``session.info``, so it ends with the session; the checks of
        :meth:`__call__` read it instead of asking the database per delivery.
        """
        channels = {d.channel for d in deliveries} | {"*"}
        ids = [c.id for c in customers]
        addresses = {
            address
            for c in customers
            for channel in channels
            if (address := _normal((c.traits or {}).get(ADDRESS_TRAITS.get(channel, "")))) is not None
        }
        who = [Suppression.customer_id.in_(ids)] + ([Suppression.address.in_(addresses)] if addresses else [])
        session.info[_SUPPRESSIONS] = (
            set(ids), channels, list(
                session.execute(
                    select(Suppression).where(Suppression.channel.in_(channels), or_(*who)).order_by(Suppression.id)
                ).scalars()
            ),
        )
        consents: dict[tuple[int, str, str], bool] = {}
        for consent in session.execute(
            select(Consent.customer_id, Consent.channel, Consent.topic, Consent.subscribed).where(
                Consent.customer_id.in_(ids), Consent.channel.in_(channels)
            )
        ):
            consents[(consent.customer_id, consent.channel, consent.topic)] = consent.subscribed
        session.info[_CONSENTS] = (set(ids), consents)

    def _check_cap(self, session: Session, delivery: Delivery, customer: Customer, cap: FrequencyCap, now: datetime) -> str | None:
        # The customer's row, as every transaction locks it (docs/operations.md, "Locks").
        lock_customers(session, [customer.id])
        session.flush()  # the deliveries this transaction cleared already count
        # The rows this one competes with were cleared in transactions that held the
        # same lock and have committed: this count sees them all.
        cleared = session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.customer_id == customer.id,
                Delivery.channel == delivery.channel,
                Delivery.kind == "marketing",
                Delivery.id != delivery.id,
                Delivery.status.in_(("claimed", "sending", "sent", "unknown")),
                Delivery.cleared_at > now - cap.per,
            )
        ).scalar_one()
        if cleared >= cap.max:
            return f"frequency cap: {cleared} {delivery.channel} messages in the last {_duration(cap.per)} (cap {cap.max})"
        return None

    def unsubscribe_url(self, session: Session, delivery: Delivery) -> str | None:
        """The one-click unsubscribe link of a marketing delivery, or None without a public URL."""
        if self.public_url is None or delivery.kind != "marketing":
            return None
        token = self.token(delivery.customer_id, delivery.channel, delivery.topic or ALL_TOPICS, session)
        return f"{self.public_url}/u/{token}"

    def token(self, customer_id: int, channel: str, topic: str, session: Session | None = None) -> str:
        """A signed token naming a customer, a channel and a topic."""
        payload = _b64(json.dumps([customer_id, channel, topic], separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._sign(payload, session))}"

    def read_token(self, token: str, session: Session | None = None) -> tuple[int, str, str] | None:
        """The (customer id, channel, topic) of a token, or None if it is not one we signed."""
        payload, _, signature = token.partition(".")
        try:
            if not hmac.compare_digest(_unb64(signature), self._sign(payload, session)):
                return None
            customer_id, channel, topic = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if not (isinstance(customer_id, int) and isinstance(channel, str) and isinstance(topic, str)):
            return None
        return customer_id, channel, topic

    def unsubscribe(self, token: str, source: str, now: datetime) -> tuple[str, str] | None:
        """Record the unsubscribe a token stands for, at once; its (channel, topic), or None if the token is invalid."""
        with self.sessions.begin() as session:
            read = self.read_token(token, session)
            if read is None or session.get(Customer, read[0]) is None:
                return None
            customer_id, channel, topic = read
            record_consent(session, customer_id, channel, topic, False, source, now)
            return channel, topic

    def _sign(self, payload: str, session: Session | None) -> bytes:
        return hmac.new(self.secret(session), b"unsubscribe:" + payload.encode(), hashlib.sha256).digest()[:20]

    def secret(self, session: Session | None = None) -> bytes:
        """``JOURNEY_SECRET``, or the secret generated once for this database.

        Pass the caller's ``session`` inside a transaction (SQLite has one writer).
        """
        if self._secret is None:
            if session is not None:
                self._secret = database_secret(session, "unsubscribe").encode()
            else:
                with self.sessions.begin() as own:
                    self._secret = database_secret(own, "unsubscribe").encode()
        return self._secret


def subscribed(session: Session, customer_id: int, channel: str, topic: str) -> bool:
    """Whether the customer may get marketing on ``channel`` about ``topic``.

    The topic's own choice wins over the channel-wide one; no choice at all means yes.
    """
    cached = session.info.get(_CONSENTS)
    if cached is not None and customer_id in cached[0]:
        choices = cached[1]
        choice = choices.get((customer_id, channel, topic), choices.get((customer_id, channel, ALL_TOPICS), True))
        return bool(choice)
    rows = dict(
        session.execute(
            select(Consent.topic, Consent.subscribed).where(
                Consent.customer_id == customer_id,
                Consent.channel == channel,
                Consent.topic.in_({topic, ALL_TOPICS}),
            )
        ).all()
    )
    return bool(rows.get(topic, rows.get(ALL_TOPICS, True)))


def record_consent(session: Session, customer_id: int, channel: str, topic: str, subscribed: bool, source: str, now: datetime) -> Consent:
    """Record the customer's choice for ``channel`` and ``topic`` (``*``: every topic); it applies at once."""
    def find() -> Consent | None:
        return session.execute(
            select(Consent).where(Consent.customer_id == customer_id, Consent.channel == channel, Consent.topic == topic)
        ).scalar_one_or_none()

    consent = find()
    if consent is None:
        consent = Consent(customer_id=customer_id, channel=channel, topic=topic, subscribed=subscribed, at=now, source=source)
        try:
            with session.begin_nested():
                session.add(consent)
            return consent
        except IntegrityError:
            # A choice recorded at the same moment (the link and the API) committed first: this one is later.
            consent = find()
            if consent is None:  # pragma: no cover - the unique constraint named something else
                raise
    consent.subscribed, consent.at, consent.source = subscribed, now, source
    session.flush()
    return consent


def suppress(session: Session, channel: str, reason: str, now: datetime, *, address: str | None = None,
             customer_id: int | None = None, note: str | None = None) -> tuple[Suppression, bool]:
    """Put an address or a customer on the suppression list of ``channel`` (``*``: all).

    An address is one entry per channel, and so is a customer without an address: if it
    is on the list already, that entry stays as it is (its reason, time and note).

    Returns:
        The entry, and whether this call added it.

    Raises:
        ValueError: the reason is unknown, or neither an address nor a customer is given.
    """
    if reason not in REASONS:
        raise ValueError(f"unknown suppression reason {reason!r}; use one of {', '.join(REASONS)}")
    address = _normal(address)
    if address is None and customer_id is None:
        raise ValueError("a suppression needs an address or a customer")
    existing = find_suppression(session, channel, address=address, customer_id=customer_id)
    if existing is not None:
        return existing, False
    entry = Suppression(channel=channel, address=address, customer_id=customer_id, reason=reason, at=now, note=note)
    try:
        with session.begin_nested():
            session.add(entry)
    except IntegrityError:
        # Added by a concurrent transaction that has committed since we looked.
        existing = find_suppression(session, channel, address=address, customer_id=customer_id)
        if existing is None:  # pragma: no cover - the unique index named something else
            raise
        return existing, False
    return entry, True


def find_suppression(session: Session, channel: str, *, address: str | None = None,
                     customer_id: int | None = None) -> Suppression | None:
    """The entry of ``channel`` for ``address`` (compared lower-cased), or else for the customer without an address."""
    address = _normal(address)
    if address is not None:
        where = Suppression.address == address
    else:
        where = (Suppression.customer_id == customer_id) & Suppression.address.is_(None)
    return session.execute(select(Suppression).where(Suppression.channel == channel, where)).scalar_one_or_none()


def record_bounce(session: Session, delivery: Delivery, customer: Customer, result: Result, now: datetime, *,
                  address: str | None = None) -> Suppression | None:
    """Suppress the address a send bounced from, with reason ``hard_bounce`` on the delivery's channel.

    Call it with every failed send's result: it does nothing unless ``result.bounce``.
    The address is the one the message went to (``address``, e.g. the message's
    recipient); without it, the customer's address trait for the channel. Only the
    address is suppressed, not the customer: a new address reaches them again.

    Returns:
        The entry (the one already there, if the address was on the list), or None when
        the result is not a bounce or the channel has no address.
    """
    trait = ADDRESS_TRAITS.get(delivery.channel)
    if not result.bounce or trait is None:
        return None
    address = _normal(address if address is not None else (customer.traits or {}).get(trait))
    if address is None:
        return None
    who = describe(session, customer)
    note = f"{result.error or 'bounced'} (delivery {delivery.id}, journey {delivery.journey_id}, {who})"
    entry, _ = suppress(session, delivery.channel, "hard_bounce", now, address=address, note=note[:1000])
    return entry


def suppression(session: Session, channel: str, customer: Customer) -> Suppression | None:
    """The suppression entry that stops ``channel`` reaching ``customer``, if any."""
    address = _normal((customer.traits or {}).get(ADDRESS_TRAITS.get(channel, "")))
    cached = session.info.get(_SUPPRESSIONS)
    if cached is not None and customer.id in cached[0] and channel in cached[1]:
        # Policy.prefetch loaded the entries of this batch's customers
        return next(
            (
                entry for entry in cached[2]
                if entry.channel in (channel, "*")
                and (entry.customer_id == customer.id or (address is not None and entry.address == address))
            ),
            None,
        )
    who = [Suppression.customer_id == customer.id]
    if address is not None:
        who.append(Suppression.address == address)
    return session.execute(
        select(Suppression).where(Suppression.channel.in_((channel, "*")), or_(*who)).order_by(Suppression.id).limit(1)
    ).scalar_one_or_none()


def customer_zone(customer: Customer) -> ZoneInfo:
    """The customer's time zone; UTC when unknown or unrecognised."""
    try:
        return ZoneInfo(customer.timezone) if customer.timezone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_quiet_hours(local: time, start: time, end: time) -> bool:
    """Whether the wall-clock time ``local`` is in the window ``[start, end)``; it may span midnight."""
    local = local.replace(tzinfo=None)
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


def quiet_until(now: datetime, zone: ZoneInfo, start: time, end: time) -> datetime | None:
    """The earliest instant at or after ``now`` outside the quiet window, or None if ``now`` is outside.

    The window is read on the wall clock of ``zone``. The clock moves steadily except at
    daylight-saving changes, where it jumps: between two changes the window's end is
    reached after the wall-clock distance to ``end``; a change before that is a new
    starting point (a jump forward may skip past the end).
    """
    t = now.astimezone(timezone.utc)
    for _ in range(10):  # a few changes at most fall within one day
        local = t.astimezone(zone)
        if not in_quiet_hours(local.time(), start, end):
            return None if t == now else t
        wall = datetime.combine(local.date(), local.time().replace(tzinfo=None))
        target = datetime.combine(local.date(), end)
        if target <= wall:
            target += timedelta(days=1)
        candidate = t + (target - wall)
        change = _next_change(t, candidate, zone)
        if change is None:
            return candidate
        t = change
    raise RuntimeError(f"no end found for quiet hours {start}-{end} in {zone.key} from {now}")  # pragma: no cover


def _next_change(start: datetime, stop: datetime, zone: ZoneInfo) -> datetime | None:
    """The first instant in ``(start, stop]`` whose UTC offset differs from ``start``'s, if any."""
    offset = start.astimezone(zone).utcoffset()
    if stop.astimezone(zone).utcoffset() == offset:
        return None  # two changes within one day do not happen
    lo = int(start.timestamp())  # offsets change on whole seconds
    hi = int(stop.timestamp()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, timezone.utc).astimezone(zone).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, timezone.utc)


def database_secret(session: Session, name: str) -> str:
    """The secret ``name`` of this database, generated and stored on first use."""
    found = session.get(Secret, name)
    if found is None:
        try:
            with session.begin_nested():
                session.add(Secret(name=name, value=secrets.token_urlsafe(32), created_at=datetime.now(timezone.utc)))
        except IntegrityError:
            pass  # another process stored one first: use theirs
        found = session.get(Secret, name, populate_existing=True)
        if found is None:  # pragma: no cover
            raise ConfigError(f"could not store the generated secret {name!r}; set JOURNEY_SECRET")
    return found.value


def _normal(address: object) -> str | None:
    return address.strip().lower() if isinstance(address, str) and address.strip() else None


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


__all__ = [
    "ADDRESS_TRAITS",
    "ALL_TOPICS",
    "REASONS",
    "Policy",
    "customer_zone",
    "database_secret",
    "find_suppression",
    "in_quiet_hours",
    "quiet_until",
    "record_bounce",
    "record_consent",
    "subscribed",
    "suppress",
    "suppression",
]
