"""The delivery pipeline: claim a delivery row, render, apply policy, send, record.

A delivery is claimed (``pending`` -> ``sending``) in its own committed transaction
before the adapter is called, and its outcome recorded in another. A worker that dies
between the two leaves the row ``sending``; the sweeper marks such rows ``unknown`` for an
operator, and nothing ever sends them again silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from channels.base import Channel, Message, Recipient, Result
from engine.deployed import DeployedJourneys
from engine.errors import TemplateError
from engine.orchestrator import customer_view
from engine.runtime.machine import customer_variable
from engine.storage.models import Customer, Delivery, TraceEntry

log = logging.getLogger(__name__)

#: Attempts per delivery before a retryable failure becomes ``dead``.
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Defer:
    """A policy's answer: not now, at ``until`` (quiet hours); ``reason`` goes in the trace."""

    until: datetime
    reason: str


#: A policy's answer: None (send), a reason (hold it back) or a :class:`Defer`.
Decision = str | Defer | None
Policy = Callable[[Session, Delivery, Customer, datetime], Decision]
#: The one-click unsubscribe link of a delivery, if it has one.
UnsubscribeLinks = Callable[[Session, Delivery], "str | None"]


class RetryLater(Exception):
    """A retryable failure: Dramatiq retries the delivery with backoff."""


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery attempt."""

    status: str
    error: str | None = None


def no_policy(_session: Session, _delivery: Delivery, _customer: Customer, _now: datetime) -> Decision:
    """The policy that holds nothing back."""
    return None


def no_links(_session: Session, _delivery: Delivery) -> str | None:
    """No unsubscribe links."""
    return None


class Deliverer:
    """Carries out deliveries with the adapters returned by ``adapters(channel_name)``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        deployed: DeployedJourneys,
        adapters: Callable[[str], Channel],
        policy: Policy = no_policy,
        unsubscribe_links: UnsubscribeLinks = no_links,
    ) -> None:
        self.sessions = sessions
        self.deployed = deployed
        self.adapters = adapters
        self.policy = policy
        self.unsubscribe_links = unsubscribe_links

    def deliver(self, delivery_id: int, now: datetime) -> Outcome:
        """Attempt delivery ``delivery_id`` once.

        Raises:
            RetryLater: the channel failed in a way that may pass; the row is ``pending``
                again and the caller retries later.
        """
        with self.sessions.begin() as session:
            claimed = session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.status == "pending",
                    or_(Delivery.not_before.is_(None), Delivery.not_before <= now),  # deferred: not yet
                )
                .values(status="sending", attempts=Delivery.attempts + 1, updated_at=now)
                .returning(Delivery.id)
            ).first()
            if claimed is None:  # already sent, held, failed, or being sent by another worker
                status = session.execute(select(Delivery.status).where(Delivery.id == delivery_id)).scalar()
                return Outcome(status or "missing")
        with self.sessions.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            customer = session.get(Customer, delivery.customer_id)
            decision = self.policy(session, delivery, customer, now)
            if isinstance(decision, Defer):
                # Pending again with no queue message: the scheduler enqueues it at ``until``.
                delivery.not_before, delivery.enqueued_at = decision.until, None
                delivery.attempts -= 1  # waiting is not a failed attempt
                self._finish(session, delivery, now, "pending", decision.reason, what="deferred")
                return Outcome("deferred", decision.reason)
            if decision is not None:
                return self._finish(session, delivery, now, "held", decision)
            delivery.cleared_at = now  # frequency caps count the deliveries cleared
            try:
                message = self._message(session, delivery, customer, now)
            except TemplateError as exc:
                return self._finish(session, delivery, now, "failed", f"template: {exc}")
            delivery.rendered = dict(message.content)
        result = self._send(message)
        with self.sessions.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            if result.status == "sent":
                delivery.provider_id = result.provider_id
                delivery.sent_at = now
                return self._finish(session, delivery, now, "sent", None)
            retry = result.status == "retryable" and delivery.attempts < MAX_ATTEMPTS
            if not retry:
                status = "dead" if result.status == "retryable" else "failed"
                return self._finish(session, delivery, now, status, result.error)
            # Back to pending (committed) before asking for a retry: if the retry message
            # is lost, the sweeper finds the row.
            delivery.status, delivery.error, delivery.updated_at = "pending", result.error, now
            self._trace(session, delivery, now, "retrying", result.error)
        raise RetryLater(result.error or "retryable failure")

    def _send(self, message: Message) -> Result:
        try:
            return self.adapters(message.channel).send(message)
        except Exception as exc:  # noqa: BLE001 - an adapter bug must not lose the outcome
            log.exception("channel %s raised", message.channel)
            return Result.retryable(f"the {message.channel} adapter raised {type(exc).__name__}: {exc}")

    def _message(self, session: Session, delivery: Delivery, customer: Customer, now: datetime) -> Message:
        journey = self.deployed.get(delivery.journey_id, delivery.version, session)
        step = journey.step(delivery.step)
        # The same ``customer`` the runtime's conditions saw, built the same way.
        variables = {**delivery.variables, "customer": customer_variable(customer_view(session, customer)), "now": now}
        content: dict[str, Any] = dict(step.render(variables)) if hasattr(step, "render") else {}
        for name in ("audience", "action"):
            if delivery.content.get(name):
                content[name] = delivery.content[name]
        if delivery.content.get("url"):
            content["url"] = delivery.content["url"]
        traits = customer.traits or {}
        recipient = Recipient(
            customer_id=customer.external_id or str(customer.id),
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

    def _finish(self, session: Session, delivery: Delivery, now: datetime, status: str, error: str | None,
                *, what: str | None = None) -> Outcome:
        delivery.status, delivery.error, delivery.updated_at = status, error, now
        self._trace(session, delivery, now, what or status, error)
        return Outcome(status, error)

    @staticmethod
    def _trace(session: Session, delivery: Delivery, now: datetime, what: str, error: str | None) -> None:
        session.add(
            TraceEntry(
                enrollment_id=delivery.enrollment_id,
                at=now,
                step=delivery.step,
                what=f"delivery {what}",
                detail=f"{delivery.channel}" + (f" {delivery.template}" if delivery.template else ""),
                value={"delivery": delivery.id, "attempt": delivery.attempts},
                error=error,
            )
        )


def sweep_deliveries(session: Session, now: datetime, pending_after: timedelta, unknown_after: timedelta) -> tuple[list[tuple[int, str]], int]:
    """Find deliveries whose queue message was lost or whose deferral ended, and mark abandoned sends ``unknown``.

    Returns:
        (id, channel) of pending deliveries to enqueue again, and how many were marked unknown.
    """
    lost = session.execute(
        select(Delivery.id, Delivery.channel)
        .where(
            Delivery.status == "pending",
            or_(
                and_(Delivery.not_before.is_(None),
                     func.coalesce(Delivery.enqueued_at, Delivery.created_at) < now - pending_after),
                # deferred by a policy: due, and not enqueued since (or that message was lost)
                and_(Delivery.not_before <= now,
                     or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < now - pending_after)),
            ),
        )
        .order_by(Delivery.id)
        .limit(1000)
        .with_for_update(skip_locked=True)
    ).all()
    if lost:
        session.execute(update(Delivery).where(Delivery.id.in_([i for i, _ in lost])).values(enqueued_at=now))
    abandoned = session.execute(
        update(Delivery)
        .where(Delivery.status == "sending", Delivery.updated_at < now - unknown_after)
        .values(status="unknown", error="a worker stopped while sending; it may or may not have been sent", updated_at=now)
        .returning(Delivery.id)
    ).all()
    return [(i, c) for i, c in lost], len(abandoned)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
