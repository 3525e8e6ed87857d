"""The delivery pipeline: claim delivery rows, apply policy, render, send, record.

A chunk of deliveries is claimed (``pending`` -> ``claimed``) and prepared (policy,
rendering) set-wise, in two transactions; ``claimed`` says "not handed to an adapter
yet". Each one is then marked ``sending`` in a committed transaction right before its
adapter is called, the same transaction that records the previous send's outcome: one
commit per send (on PostgreSQL one statement, the outcome, its trace and the mark, in
autocommit; the threads of a process that want one at the same moment share it:
:class:`GroupRecorder`).
A worker that dies leaves its claimed rows ``claimed`` (never sent: the
sweeper makes them pending again) and at most the one send it was making ``sending``
(the sweeper marks it ``unknown``; an operator decides, or, for a channel whose provider
deduplicates on the idempotency key, it is resent automatically). Nothing is ever sent
twice silently.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Dialect, Engine, Table, TextClause, and_, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from channels.base import ADDRESS_FIELDS, Channel, Message, Recipient, Result
from engine import profiles
from engine.deployed import DeployedJourneys
from engine.errors import ConfigError, TemplateError
from engine.orchestrator import customer_views
from engine.ratelimit import RateLimiter
from engine.runtime.machine import customer_variable
from engine.storage.models import Customer, Delivery, Enrollment, TraceEntry
from engine.storage.types import UTCDateTime
from engine.storage.upsert import insert_rows, recordset_insert_sql, recordset_json
from engine.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

#: Attempts per delivery before a retryable failure becomes ``dead``, unless the
#: channel has its own (``CHANNEL_MAX_ATTEMPTS``).
MAX_ATTEMPTS = 5
#: The statuses of a delivery that is not final yet: waiting to be claimed, claimed by a
#: worker (not handed to an adapter yet), being sent.
UNSETTLED = ("pending", "claimed", "sending")
#: Deliveries claimed and prepared together (a worker that dies mid-chunk leaves them
#: ``claimed``, to be sent again; only the one being sent is ``unknown``).
CLAIM_CHUNK = 10
#: The error of a delivery whose worker stopped in the middle of its send.
UNKNOWN_ERROR = "a worker stopped while sending; it may or may not have been sent"
#: The trace of an unknown delivery resent because its provider deduplicates.
RESENT_DEDUPLICATED = "resent automatically: the provider deduplicates on the key"
#: Groups of per-send transactions a process commits at once (:class:`GroupRecorder`).
GROUPS_IN_FLIGHT = 2
#: The longest a worker waits inline for a channel's rate limit; a longer wait re-enqueues.
MAX_RATE_WAIT = 1.0
#: Backoff between attempts: BACKOFF_MIN seconds, doubling, at most BACKOFF_MAX.
BACKOFF_MIN = 1
BACKOFF_MAX = 300


@dataclass(frozen=True)
class Defer:
    """A policy's answer: not now, at ``until`` (quiet hours); ``reason`` goes in the trace."""

    until: datetime
    reason: str


#: A policy's answer: None (send), a reason (hold it back) or a :class:`Defer`.
Decision = str | Defer | None
PolicyCheck = Callable[[UnitOfWork, Delivery, Customer, datetime], Decision]
#: Where the deliverer reads the time: the services' clock.
Clock = Callable[[], datetime]
#: The one-click unsubscribe link of a delivery, if it has one.
UnsubscribeLinks = Callable[[Session, Delivery], "str | None"]
#: Called with a send that bounced (``Result.bounce``), in the transaction recording it.
Bounces = Callable[..., object]


@dataclass(frozen=True)
class DeliveryOutcome:
    """What became of one delivery attempt; ``retry_in`` (seconds) when it is to be tried again."""

    status: str
    error: str | None = None
    retry_in: float | None = None
    channel: str | None = None


def backoff(attempts: int) -> float:
    """Seconds before retrying a delivery that failed ``attempts`` times: 1 s doubling, at most 5 min."""
    return float(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, attempts - 1)))


def no_policy(_unit: UnitOfWork, _delivery: Delivery, _customer: Customer, _now: datetime) -> Decision:
    """The policy that holds nothing back."""
    return None


def no_links(_session: Session, _delivery: Delivery) -> str | None:
    """No unsubscribe links."""
    return None


def no_bounces(_session: Session, _delivery: Delivery, _customer: Customer, _result: Result, _now: datetime, *,
               address: str | None = None) -> object:
    """Bounces change nothing."""
    return None


def _ended_while_waiting(deliveries: Sequence[Delivery], enrollments: Mapping[str, tuple[str, datetime | None]]) -> dict[int, str]:
    """Held-back reasons for sends whose enrollment converted or exited while they waited.

    ``enrollments``: the (status, ended_at) of each delivery's enrollment.

    Marketing sends, whether deferred by quiet hours, retried, or behind a long queue: the
    cart reminder made at 11:00 and judged after the 11:00:05 order would thank nobody.
    And audience adds not sent yet: the enrollment's ending has sent the removal already,
    and an add that went out after it would leave the customer in the audience for good.
    A send made at the instant of the ending (a goal's ``goto`` path) is not held back.
    Transactional sends always go.
    """
    return {
        d.id: f"the enrollment {status} at {ended_at.isoformat()} while this send waited"
        for d in deliveries
        if d.kind == "marketing" or d.content.get("action") == "add"
        for status, ended_at in [enrollments.get(d.enrollment_id, ("", None))]
        if status in ("converted", "exited") and ended_at is not None and ended_at > d.created_at
    }


class Deliverer:
    """Carries out deliveries with the adapters returned by ``adapters(channel_name)``.

    Deliveries go in batches (one queue message carries the ids of many): a chunk costs
    two set-wise transactions (claim: one statement, in autocommit on PostgreSQL; prepare:
    one read of the rows, the policy's prefetch, constant executemany writes and one
    trace insert) and one commit per send, shared with the process's other threads
    sending at the same moment (:class:`GroupRecorder`).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        deployed: DeployedJourneys,
        adapters: Callable[[str], Channel],
        policy: PolicyCheck = no_policy,
        unsubscribe_links: UnsubscribeLinks = no_links,
        limiter: RateLimiter | None = None,
        bounces: Bounces = no_bounces,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: Mapping[str, int] | None = None,
    ) -> None:
        self.sessions = sessions
        self.deployed = deployed
        self.adapters = adapters
        self.policy = policy
        self.unsubscribe_links = unsubscribe_links
        self.limiter = limiter
        self.bounces = bounces
        self.sleep = sleep
        self.max_attempts = dict(max_attempts or {})  # by channel; MAX_ATTEMPTS for the others
        bind = sessions.kw.get("bind")
        # PostgreSQL: statements that are a transaction alone run in autocommit, and the
        # per-send transactions of this process's threads are committed in groups.
        self._autocommit: Engine | None = None
        self._grouped: GroupRecorder | None = None
        if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
            self._autocommit = autocommit(bind)
            self._grouped = GroupRecorder(self._autocommit)

    def deliver(self, delivery_id: int, now: datetime | Clock) -> DeliveryOutcome:
        """Attempt delivery ``delivery_id`` once (see :meth:`deliver_many`)."""
        return self.deliver_many([delivery_id], now)[delivery_id]

    def deliver_many(self, delivery_ids: Sequence[int], now: datetime | Clock) -> dict[int, DeliveryOutcome]:
        """Attempt each delivery once, ``CLAIM_CHUNK`` at a time; return each one's outcome.

        ``now`` is the services' clock (the workers pass ``Services.clock``), read again
        for each chunk and each send, so that each is judged and recorded at its own
        moment however long the message takes (slow providers, rate-limit waits); or a
        fixed moment at which all of them happen.

        For each chunk:

        1. Claim (``pending`` -> ``claimed``) the rows that are pending and not deferred,
           and commit.
        2. Apply the policy and render, in one transaction: held, deferred and failed
           rows are final here; the rest stay ``claimed``, cleared to send. If this
           transaction fails nothing was sent: the claims are released and the error raised.
        3. For each row, within the channel's rate limit: one transaction records the
           previous send's outcome and marks this row ``sending`` (if its claim is still
           ours), then the adapter is called. A crash leaves only that row ``sending``.
           On PostgreSQL that transaction is shared with the other threads of the process
           that want one at the same moment (:class:`GroupRecorder`).
        4. The last outcome is recorded in a transaction of its own. A retryable failure,
           or a send the rate limit holds back, is ``pending`` again with ``retry_in``
           set: the caller enqueues it again after that delay.
        """
        clock: Clock = now if callable(now) else (lambda: now)
        ids = sorted(set(delivery_ids))
        outcomes: dict[int, DeliveryOutcome] = {}
        for start in range(0, len(ids), CLAIM_CHUNK):
            outcomes.update(self._deliver_chunk(ids[start : start + CLAIM_CHUNK], clock))
        return outcomes

    def _deliver_chunk(self, ids: list[int], clock: Clock) -> dict[int, DeliveryOutcome]:
        now = clock()
        with self._statements() as session:
            claimed = set(
                session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id.in_(ids),
                        Delivery.status == "pending",
                        or_(Delivery.not_before.is_(None), Delivery.not_before <= now),  # deferred: not yet
                    )
                    .values(status="claimed", attempts=Delivery.attempts + 1, updated_at=now)
                    .returning(Delivery.id)
                ).scalars()
            )
            outcomes: dict[int, DeliveryOutcome] = {}
            others = [i for i in ids if i not in claimed]
            if others:  # already sent, held, failed, or being sent by another worker
                found = dict(session.execute(select(Delivery.id, Delivery.status).where(Delivery.id.in_(others))).all())
                outcomes.update({i: DeliveryOutcome(found.get(i, "missing")) for i in others})
        if not claimed:
            return outcomes
        try:
            messages = self._prepare(sorted(claimed), now, outcomes)
        except Exception:
            self._release(claimed, now)
            raise
        if messages:
            outcomes.update(self._send_each(messages, now, clock))
        return outcomes

    def _send_each(self, messages: list[tuple[Delivery, Message]], claimed_at: datetime,
                   clock: Clock) -> dict[int, DeliveryOutcome]:
        """Send the prepared ``messages`` one by one, each after its committed mark (step 3 of :meth:`deliver_many`)."""
        outcomes: dict[int, DeliveryOutcome] = {}
        done: list[Sent] = []  # outcomes not recorded yet: they go in the next transaction
        left = list(messages)
        try:
            while left:
                delivery, message = left[0]
                wait = self._rate_wait(message.channel)
                if wait > 0:  # not sent: recorded pending again with the next send
                    done.append((delivery, message, wait, clock()))
                    left.pop(0)
                    continue
                marked = self._commit(done, outcomes, clock(), sending=delivery,
                                      claimed_at=claimed_at)
                left.pop(0)
                done = []
                if not marked:
                    # The sweeper gave the claim back (this chunk took longer than its
                    # threshold) and another worker may have it: not ours to send.
                    outcomes[delivery.id] = DeliveryOutcome("pending", "the claim expired before the send")
                    continue
                done = [(delivery, message, self._send(message), clock())]
        except BaseException:
            # A worker stopping, or the database failing: what was sent is recorded if it
            # can be (else it stays ``sending``, later ``unknown``), what was not is released.
            if done:
                try:
                    self._commit(done, outcomes, clock())
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    log.warning("could not record %d sends; the sweeper will mark them", len(done), exc_info=True)
            self._release({d.id for d, _ in left}, claimed_at)
            raise
        if done:
            self._commit(done, outcomes, clock())
        return outcomes

    @contextlib.contextmanager
    def _statements(self) -> Iterator[Session | Connection]:
        """Where statements that are each a transaction of their own run (the claim, a release).

        On PostgreSQL a connection in autocommit: one round trip a statement, where
        ``BEGIN``, the statement and ``COMMIT`` took three. Elsewhere a transaction.
        """
        if self._autocommit is None:
            with self.sessions.begin() as session:
                yield session
        else:
            with self._autocommit.connect() as connection:
                yield connection

    def _rate_wait(self, channel: str) -> float:
        """Wait inline for the channel's rate limit; 0 to send now, or the seconds left if that is too long."""
        if self.limiter is None:
            return 0.0
        wait = self.limiter.acquire(channel)
        while 0 < wait <= MAX_RATE_WAIT:
            self.sleep(wait)
            wait = self.limiter.acquire(channel)
        return max(wait, 0.0)

    def _prepare(self, ids: list[int], now: datetime, outcomes: dict[int, DeliveryOutcome]) -> list[tuple[Delivery, Message]]:
        """Policy and rendering for the claimed ``ids``; final outcomes go in ``outcomes``.

        The rows are read once and written with constant statements (executemany): the
        cleared ones (``cleared_at``, what was rendered), the final ones (held, deferred,
        failed), one trace insert; the loaded objects are changed without the ORM's flush.
        A frequency cap counts the deliveries cleared in this transaction: the rows
        decided so far are written before a customer's next delivery is judged.
        """
        ready: list[tuple[Delivery, Message]] = []
        cleared: list[dict[str, Any]] = []
        settled: list[dict[str, Any]] = []
        traces: list[dict[str, Any]] = []
        with self.sessions.begin() as session:
            unit = UnitOfWork(session)
            # One query: the deliveries, their customers and how their enrollments stand.
            rows = session.execute(
                select(Delivery, Customer, Enrollment.status, Enrollment.ended_at)
                .join(Customer, Customer.id == Delivery.customer_id)
                .outerjoin(Enrollment, Enrollment.id == Delivery.enrollment_id)
                .where(Delivery.id.in_(ids))
            ).all()
            deliveries = [row[0] for row in rows]
            customers = {row[1].id: row[1] for row in rows}
            enrollments = {row[0].enrollment_id: (row[2], row[3]) for row in rows}
            views = customer_views(unit, list(customers.values()))
            prefetch = getattr(self.policy, "prefetch", None)
            if prefetch is not None:
                prefetch(unit, deliveries, list(customers.values()))
            ended = _ended_while_waiting(deliveries, enrollments)
            written: set[int] = set()  # customers whose rows are all written

            def write() -> None:
                connection = session.connection()
                if cleared:
                    connection.execute(_CLEAR, cleared)
                if settled:
                    connection.execute(_SETTLE, settled)
                insert_rows(session, TraceEntry, traces)
                for done in (cleared, settled, traces):
                    done.clear()
                written.clear()

            def settle(delivery: Delivery, status: str, error: str | None, what: str | None = None, **values: Any) -> DeliveryOutcome:
                _assign(delivery, status=status, error=error, updated_at=now, **values)
                settled.append({"b_id": delivery.id, "b_status": status, "b_error": error, "b_now": now,
                                "b_not_before": delivery.not_before, "b_enqueued_at": delivery.enqueued_at,
                                "b_attempts": delivery.attempts})
                traces.append(trace_row(delivery, now, what or status, error))
                return DeliveryOutcome(status, error)

            # By customer: a policy that locks customers locks them in one order everywhere.
            for delivery in sorted(deliveries, key=lambda d: (d.customer_id, d.id)):
                customer = customers[delivery.customer_id]
                if customer.id in written:
                    write()  # its earlier deliveries in this chunk count for its caps
                written.add(customer.id)
                decision = ended.get(delivery.id) or self.policy(unit, delivery, customer, now)
                if isinstance(decision, Defer):
                    # Pending again with no queue message: the scheduler enqueues it at ``until``.
                    # Waiting is not a failed attempt: its attempt is given back.
                    settle(delivery, "pending", decision.reason, "deferred", not_before=decision.until, enqueued_at=None,
                           attempts=delivery.attempts - 1)
                    outcomes[delivery.id] = DeliveryOutcome("deferred", decision.reason)
                    continue
                if decision is not None:
                    outcomes[delivery.id] = settle(delivery, "held", decision)
                    continue
                _assign(delivery, cleared_at=now)  # frequency caps count the deliveries cleared
                try:
                    message = self._message(session, delivery, customer, views[customer.id], now)
                except TemplateError as exc:
                    cleared.append({"b_id": delivery.id, "b_now": now, "b_rendered": delivery.rendered})
                    outcomes[delivery.id] = settle(delivery, "failed", f"template: {exc}")
                    continue
                _assign(delivery, rendered=dict(message.content))
                cleared.append({"b_id": delivery.id, "b_now": now, "b_rendered": delivery.rendered})
                ready.append((delivery, message))
            write()
        return ready

    def _release(self, ids: set[int], claimed_at: datetime) -> None:
        """Give back claims (made at ``claimed_at``) that were never handed to an adapter."""
        if not ids:
            return
        try:
            with self._statements() as session:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids), Delivery.status == "claimed", Delivery.updated_at == claimed_at)
                    .values(status="pending", attempts=Delivery.attempts - 1, updated_at=claimed_at)
                )
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.warning("could not release %d claimed deliveries; the sweeper will mark them", len(ids), exc_info=True)

    def _commit(self, results: list[Sent], outcomes: dict[int, DeliveryOutcome], now: datetime, *,
                sending: Delivery | None = None, claimed_at: datetime | None = None) -> bool:
        """Record ``results`` and mark ``sending`` as being sent, in one transaction.

        One UPDATE (executemany) and one trace INSERT for the results. A float instead
        of a result: the rate limit held the send back for that long. The datetime of
        each is when its send returned (its ``sent_at``). ``sending`` is marked only if
        it is still claimed by this worker (claimed at ``claimed_at``).

        Returns:
            False if ``sending`` was given, but is no longer ours to send.
        """
        changes: list[dict[str, Any]] = []
        traces: list[dict[str, Any]] = []
        bounced: list[tuple[Delivery, Message, Result]] = []
        for delivery, message, result, done in results:
            outcome, change = self._outcome(delivery, result, done, now)
            if isinstance(result, Result) and result.bounce and outcome.status in ("dead", "failed"):
                bounced.append((delivery, message, result))
            changes.append(change)
            what = ("rate limited" if isinstance(result, float) else "retrying") if outcome.retry_in is not None else outcome.status
            traces.append(trace_row(delivery, now, what, outcome.error))
            outcomes[delivery.id] = outcome
        mark = None if sending is None else {"b_id": sending.id, "b_claimed_at": claimed_at, "b_now": now}
        if not bounced and self._grouped is not None:
            # PostgreSQL: with the other threads' records and marks, one statement and one commit.
            return self._grouped.record(changes, traces, mark)
        marked = True
        with self.sessions.begin() as session:
            if changes:
                session.connection().execute(_RECORD, changes)
                insert_rows(session, TraceEntry, traces)
            for delivery, message, result in bounced:
                address = getattr(message.recipient, ADDRESS_FIELDS.get(delivery.channel, ""), None)
                self.bounces(session, delivery, session.get(Customer, delivery.customer_id), result, now,
                             address=address)
            if mark is not None:
                marked = session.connection().execute(_MARK_SENDING, mark).rowcount == 1
        return marked

    def _outcome(self, delivery: Delivery, result: Result | float, done: datetime,
                 now: datetime) -> tuple[DeliveryOutcome, dict[str, Any]]:
        """What a send's result makes of its delivery, and the row change (``_RECORD``'s parameters)."""
        change = {"b_id": delivery.id, "b_attempts": delivery.attempts, "b_now": now, "b_provider_id": None,
                  "b_sent_at": None, "b_enqueued_at": None, "b_refund": 0}
        if isinstance(result, float):
            # Not sent and not a failure: pending again, its attempt given back.
            outcome = DeliveryOutcome("pending", f"rate limit of {delivery.channel}: waits {result:.1f}s", result,
                              delivery.channel)
            change.update(b_enqueued_at=now + timedelta(seconds=result), b_refund=1)
        elif result.status == "sent":
            outcome = DeliveryOutcome("sent")
            change.update(b_provider_id=result.provider_id, b_sent_at=done)
        elif result.status == "retryable" and delivery.attempts < self.max_attempts.get(delivery.channel, MAX_ATTEMPTS):
            # Pending again (committed) before the retry is enqueued: if that message
            # is lost, the sweeper finds the row once the backoff has passed.
            delay = backoff(delivery.attempts)
            if result.retry_after is not None:  # the provider said when: not sooner
                delay = max(delay, result.retry_after.total_seconds())
            outcome = DeliveryOutcome("pending", result.error, delay, delivery.channel)
            change["b_enqueued_at"] = now + timedelta(seconds=delay)
        else:
            outcome = DeliveryOutcome("dead" if result.status == "retryable" else "failed", result.error)
        change.update(b_status=outcome.status, b_error=outcome.error)
        return outcome, change

    def _send(self, message: Message) -> Result:
        try:
            adapter = self.adapters(message.channel)
        except ConfigError as exc:
            # Settings do not fix themselves between retries: fail now, with the reason.
            return Result.permanent(f"the {message.channel} channel is not configured: {exc}")
        try:
            return adapter.send(message)
        except Exception as exc:  # noqa: BLE001 - an adapter bug must not lose the outcome
            log.exception("channel %s raised", message.channel)
            return Result.retryable(f"the {message.channel} adapter raised {type(exc).__name__}: {exc}")

    def _message(self, session: Session, delivery: Delivery, customer: Customer, view: dict[str, Any],
                 now: datetime) -> Message:
        content: dict[str, Any] = {}
        if delivery.content.get("parts") != []:  # audience sends name none: nothing to render
            journey = self.deployed.get(delivery.journey_id, delivery.version, session)
            step = journey.step(delivery.step)
            # The same ``customer`` the runtime's conditions saw, built the same way.
            variables = {**delivery.variables, "customer": customer_variable(view), "now": now}
            content = dict(step.render(variables)) if hasattr(step, "render") else {}
        for name in ("audience", "action"):
            if delivery.content.get(name):
                content[name] = delivery.content[name]
        if delivery.content.get("url"):
            content["url"] = delivery.content["url"]
        traits = customer.traits or {}
        ident, anonymous = profiles.public_id(session, customer)
        recipient = Recipient(
            customer_id=ident,
            anonymous=anonymous,
            email=_text(traits.get("email")),
            phone=_text(traits.get("phone")),
            push_token=_text(traits.get("push_token")),
            traits=traits,
        )
        metadata = {"journey_id": delivery.journey_id, "step_id": delivery.step, "topic": delivery.topic}
        unsubscribe_url = self.unsubscribe_links(session, delivery)
        if unsubscribe_url:
            metadata["unsubscribe_url"] = unsubscribe_url
        return Message(
            channel=delivery.channel,
            idempotency_key=delivery.key,
            recipient=recipient,
            content=content,
            metadata=metadata,
        )


#: The columns of :func:`trace_row`'s rows.
TRACE_COLUMNS = ("enrollment_id", "at", "step", "what", "detail", "value", "error")


def trace_row(delivery: Delivery, now: datetime, what: str, error: str | None, note: str | None = None) -> dict[str, Any]:
    """The trace row of something that happened to ``delivery`` (``note``: who or why, shown after it)."""
    return {
        "enrollment_id": delivery.enrollment_id,
        "at": now,
        "step": delivery.step,
        "what": f"delivery {what}",
        "detail": f"{delivery.channel}" + (f" {delivery.template}" if delivery.template else "")
                  + (f" ({note})" if note else ""),
        "value": {"delivery": delivery.id, "attempt": delivery.attempts},
        "error": error,
    }


#: A send's result: the delivery, its message, the result (or the rate limit's wait), when it returned.
Sent = tuple[Delivery, Message, "Result | float", datetime]

# The outcome of a send: one statement for a batch's rows (executemany). Only while
# the attempt is still this one: a delivery swept and claimed again is not overwritten.
_RECORD = (
    update(cast(Table, Delivery.__table__))  # a declarative class's table, though typed as a FromClause
    .where(Delivery.__table__.c.id == bindparam("b_id"), Delivery.__table__.c.attempts == bindparam("b_attempts"))
    .values(
        status=bindparam("b_status"), error=bindparam("b_error"), provider_id=bindparam("b_provider_id"),
        sent_at=bindparam("b_sent_at"), updated_at=bindparam("b_now"),
        attempts=Delivery.__table__.c.attempts - bindparam("b_refund"),
        enqueued_at=func.coalesce(bindparam("b_enqueued_at"), Delivery.__table__.c.enqueued_at),
    )
)


# What preparing a chunk decided (executemany): the deliveries cleared to send, with what
# was rendered, and those held, deferred or failed there.
_CLEAR = (
    update(cast(Table, Delivery.__table__))
    .where(Delivery.__table__.c.id == bindparam("b_id"))
    .values(cleared_at=bindparam("b_now"), rendered=bindparam("b_rendered"))
)
_SETTLE = (
    update(cast(Table, Delivery.__table__))
    .where(Delivery.__table__.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"), error=bindparam("b_error"), updated_at=bindparam("b_now"),
            not_before=bindparam("b_not_before"), enqueued_at=bindparam("b_enqueued_at"),
            attempts=bindparam("b_attempts"))
)


def _assign(delivery: Delivery, **values: Any) -> None:
    """Change loaded attributes without making the object dirty: the statements above write them."""
    for name, value in values.items():
        set_committed_value(delivery, name, value)


#: The columns of a delivery's ``_RECORD`` parameters, as the delivery columns whose types they have.
_RECORD_COLUMNS = {"b_id": "id", "b_attempts": "attempts", "b_status": "status", "b_error": "error",
                   "b_provider_id": "provider_id", "b_sent_at": "sent_at", "b_now": "updated_at",
                   "b_enqueued_at": "enqueued_at", "b_refund": "attempts"}


#: The columns of a ``sending`` mark's parameters (``_MARK_SENDING``), as the delivery columns whose types they have.
_MARK_COLUMNS = {"b_id": "id", "b_claimed_at": "updated_at", "b_now": "updated_at"}


@functools.lru_cache(maxsize=4)
def _record_and_mark(dialect: Dialect) -> TextClause:
    """PostgreSQL: ``_RECORD`` for the rows in ``:changes``, their trace in ``:traces`` and
    ``_MARK_SENDING`` for the rows in ``:marks``, one statement returning the ids marked.

    Its text is constant (the rows travel as JSON): prepared once; one round trip for
    what took three. The updates touch different rows (a delivery is recorded after its send).
    """
    table = cast(Table, Delivery.__table__)

    def types(columns: Mapping[str, str]) -> str:
        return ", ".join(f"{name} {table.c[column].type.compile(dialect)}" for name, column in columns.items())

    trace = recordset_insert_sql(cast(Table, TraceEntry.__table__), TRACE_COLUMNS, "traces", dialect)
    return text(
        "WITH recorded AS ("
        " UPDATE deliveries AS d SET status = r.b_status, error = r.b_error, provider_id = r.b_provider_id,"
        " sent_at = r.b_sent_at, updated_at = r.b_now, attempts = d.attempts - r.b_refund,"
        " enqueued_at = coalesce(r.b_enqueued_at, d.enqueued_at)"
        f" FROM jsonb_to_recordset(CAST(:changes AS jsonb)) AS r({types(_RECORD_COLUMNS)})"
        " WHERE d.id = r.b_id AND d.attempts = r.b_attempts"
        f"), traced AS ({trace}) "
        "UPDATE deliveries AS d SET status = 'sending', updated_at = m.b_now"
        f" FROM jsonb_to_recordset(CAST(:marks AS jsonb)) AS m({types(_MARK_COLUMNS)})"
        " WHERE d.id = m.b_id AND d.status = 'claimed' AND d.updated_at = m.b_claimed_at RETURNING d.id"
    )


def autocommit(engine: Engine) -> Engine:
    """``engine`` (its pool) with each statement a transaction of its own: one round trip
    where ``BEGIN``, the statement and ``COMMIT`` took three, committed as durably."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class _Record:
    """One thread's outcomes to record and next send to mark, waiting for a group commit."""

    __slots__ = ("changes", "traces", "mark", "taken", "done", "marked", "error", "retry")

    def __init__(self, changes: list[dict[str, Any]], traces: list[dict[str, Any]], mark: dict[str, Any] | None) -> None:
        self.changes = changes
        self.traces = traces
        self.mark = mark
        self.taken = False  # in a group being committed
        self.done = False  # committed, or failed
        self.marked = False
        self.error: BaseException | None = None
        self.retry = False  # failed with others: to commit alone


class GroupRecorder:
    """Group commit of the per-send transactions of a process's delivery threads (PostgreSQL).

    Each send needs its own committed mark before its adapter is called (so that a crash
    leaves only the sends in flight ``unknown``), and each outcome a committed record.
    Threads that want one while another thread's group is being committed wait for it;
    then the first of them commits all of theirs in one statement and one commit. The
    mark of every send is still durable before that send, and a thread alone commits its
    own at once, as before: a commit per group (at most one record per thread in it)
    where there was one per send, with the same promise. Up to ``in_flight`` groups are
    committed at once (more groups, smaller ones: 2 measured best, see docs/operations.md).
    If a group's transaction fails, each thread in it commits its own alone, so one bad
    row fails only its own thread. The threads' counterpart of the web's
    :class:`engine.ingest.EventWriter`, which groups concurrent requests' events.
    """

    def __init__(self, autocommit: Engine, in_flight: int = GROUPS_IN_FLIGHT) -> None:
        """``autocommit``: the PostgreSQL engine in autocommit (:func:`autocommit`)."""
        self.autocommit = autocommit
        self.in_flight = in_flight
        self._ready = threading.Condition()
        self._waiting: list[_Record] = []
        self._leading = 0  # groups being committed

    def record(self, changes: list[dict[str, Any]], traces: list[dict[str, Any]], mark: dict[str, Any] | None) -> bool:
        """Commit ``changes`` (``_RECORD``'s rows), ``traces`` and ``mark`` (``_MARK_SENDING``'s parameters).

        Returns:
            False if ``mark`` was given and its delivery is no longer this worker's to send.
        """
        own = _Record(changes, traces, mark)
        group: list[_Record] = []
        with self._ready:
            self._waiting.append(own)
            # Wait while its record is in a group being committed, or while no group can start.
            while not own.done and (own.taken or self._leading >= self.in_flight):
                self._ready.wait()
            if not own.done:
                self._leading += 1
                group, self._waiting = self._waiting, []
                for one in group:
                    one.taken = True
        if group:
            self._commit(group, own, leading=True)
        if own.retry:
            self._commit([own], own, leading=False)
        if own.error is not None:
            raise own.error
        return own.mark is None or own.marked

    def _commit(self, group: list[_Record], leader: _Record, *, leading: bool) -> None:
        marked: set[int] = set()
        error: BaseException | None = None
        try:
            with self.autocommit.connect() as connection:
                marked = set(connection.execute(_record_and_mark(connection.dialect), {
                    "changes": recordset_json([c for r in group for c in r.changes]),
                    "traces": recordset_json([t for r in group for t in r.traces]),
                    "marks": recordset_json([r.mark for r in group if r.mark is not None]),
                }).scalars())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread it belongs to
            error = exc
        with self._ready:
            for one in group:
                one.marked = one.mark is not None and one.mark["b_id"] in marked
                # Another thread's failure (or its stop) is not this one's: it commits alone.
                one.retry = error is not None and len(group) > 1 and (one is not leader or isinstance(error, Exception))
                one.error = None if one.retry else error
                one.done = True
            if leading:
                self._leading -= 1
                self._ready.notify_all()


def lost_condition(now: datetime, pending_after: timedelta) -> ColumnElement[bool]:
    """Pending deliveries that should have been sent by ``now`` if their queue message was not lost.

    Those enqueued (or created) longer than ``pending_after`` ago, and those deferred by a
    policy until a time that has passed, not enqueued since (or that message was lost).
    """
    return and_(
        Delivery.status == "pending",
        or_(
            and_(Delivery.not_before.is_(None),
                 func.coalesce(Delivery.enqueued_at, Delivery.created_at) < now - pending_after),
            and_(Delivery.not_before <= now,
                 or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < now - pending_after)),
        ),
    )


# Marks a claimed delivery ``sending`` right before its send, if the claim is still this worker's.
_MARK_SENDING = (
    update(cast(Table, Delivery.__table__))
    .where(Delivery.__table__.c.id == bindparam("b_id"), Delivery.__table__.c.status == "claimed",
           Delivery.__table__.c.updated_at == bindparam("b_claimed_at", type_=UTCDateTime()))
    .values(status="sending", updated_at=bindparam("b_now", type_=UTCDateTime()))
)


@dataclass(frozen=True)
class Abandoned:
    """What the sweeper made of the deliveries workers stopped working on.

    Attributes:
        requeue: (id, channel) of deliveries pending again, to enqueue: claims given
            back, and unknown sends resent because their provider deduplicates.
        released: claims given back (never handed to an adapter).
        unknown: sends marked ``unknown``.
        resent: unknown sends resent automatically.
    """

    requeue: list[tuple[int, str]]
    released: int
    unknown: int
    resent: int


def sweep_abandoned(session: Session, now: datetime, after: timedelta, deduplicating: Collection[str]) -> Abandoned:
    """Settle the deliveries a worker left ``claimed`` or ``sending`` longer than ``after`` ago.

    A ``claimed`` row was never handed to an adapter: it is pending again, its attempt
    given back. A ``sending`` row may or may not have gone out: it is ``unknown``. An
    unknown delivery of a channel in ``deduplicating`` (its provider drops a second
    message with the same idempotency key) is pending again: sending it twice is safe.
    Each is recorded in the trace.
    """
    cutoff = now - after
    released = session.execute(
        update(Delivery)
        .where(Delivery.status == "claimed", Delivery.updated_at < cutoff)
        .values(status="pending", attempts=Delivery.attempts - 1, enqueued_at=now, updated_at=now)
        .returning(Delivery.id, Delivery.channel)
    ).all()
    # ``updated_at`` stays when the send began: what an operator compares with the provider's logs.
    unknown = list(session.execute(
        update(Delivery)
        .where(Delivery.status == "sending", Delivery.updated_at < cutoff)
        .values(status="unknown", error=UNKNOWN_ERROR)
        .returning(Delivery)
    ).scalars())
    traces = [trace_row(d, now, "unknown", UNKNOWN_ERROR) for d in unknown]
    resent: list[Delivery] = []
    if deduplicating:
        resent = list(session.execute(
            update(Delivery)
            .where(Delivery.status == "unknown", Delivery.channel.in_(sorted(deduplicating)))
            .values(status="pending", error=None, enqueued_at=now, updated_at=now)
            .returning(Delivery)
        ).scalars())
        traces += [trace_row(d, now, "resent", None, RESENT_DEDUPLICATED) for d in resent]
    insert_rows(session, TraceEntry, traces)
    return Abandoned(
        requeue=[(i, c) for i, c in released] + [(d.id, d.channel) for d in resent],
        released=len(released), unknown=len(unknown), resent=len(resent),
    )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
