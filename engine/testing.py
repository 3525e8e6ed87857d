"""Unit-test your journeys on a virtual clock: ``JourneyTest``, built on the twin.

::

    from engine.testing import JourneyTest

    def test_reminder_after_an_hour():
        t = JourneyTest("journeys/cart_abandonment.yaml", customer={"first_name": "Ada", "email": "ada@example.com"})
        t.send("checkout_started", cart_value=120, order_id="o-1", currency="EUR", item_count=2)
        t.advance("59m")
        assert t.sent() == []
        t.advance("1m")
        assert [s.template for s in t.sent("email")] == ["cart_reminder"]
        t.send("order_completed", order_id="o-1")
        assert t.enrollment.status == "converted"

The journeys run on :class:`engine.twin.Twin`: the workers' own code (profiles, policy
with consent, caps and quiet hours, rendering, the deliverer) on an in-memory database and
a virtual clock. Nothing is sent anywhere: each channel is a recording stub that needs
what the real one needs (an email needs the ``email`` trait). :meth:`JourneyTest.sent`
raises on a delivery that failed (a template that does not render, a missing address)
unless asked not to; :meth:`JourneyTest.held` lists what the policy held back, with why.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.definitions import load_journey
from engine.definitions.model import Journey
from engine.durations import parse_duration
from engine.runtime import EnrollmentState, Trace
from engine.twin import DEFAULT_START, Effect, Profile, Twin, delivery_effect, deliveries, enrollments, trace, turn_aways

__all__ = ["DEFAULT_START", "Effect", "JourneyTest"]


def _load(path: Path) -> Journey:
    """Load a journey file, once per process while it stays unchanged (a test file builds many)."""
    if not path.is_file():
        return load_journey(path)  # raises DefinitionError, saying why
    return _load_version(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _load_version(path: str, _mtime_ns: int) -> Journey:
    return load_journey(path)


class JourneyTest:
    """One customer going through one or more journeys, on a virtual clock.

    Args:
        journeys: a journey file path, a loaded :class:`~engine.definitions.Journey`, or a list of them.
        customer: the customer's traits (``timezone`` among them sets their time zone).
        customer_id: the customer's id (default ``test-customer``).
        start: the clock's start (aware datetime; default :data:`DEFAULT_START`, a Monday 09:00 UTC).
        stage: the customer's lifecycle stage at the start.
        points: the customer's points at the start.

    Attributes:
        twin: the :class:`~engine.twin.Twin` the journeys run on (its rows, other customers).
    """

    def __init__(
        self,
        journeys: str | Path | Journey | list[str | Path | Journey],
        *,
        customer: Mapping[str, Any] | None = None,
        customer_id: str = "test-customer",
        start: dt.datetime = DEFAULT_START,
        stage: str | None = None,
        points: int = 0,
    ) -> None:
        items = journeys if isinstance(journeys, list) else [journeys]
        loaded = [item if isinstance(item, Journey) else _load(Path(item)) for item in items]
        self.journeys = {j.id: j for j in loaded}
        self.twin = Twin(loaded, start=start)
        self.customer_id = customer_id
        if stage is not None or points:
            self.twin.seed_customer(customer_id, stage=stage, points=points)
        if customer:
            self.identify(**customer)

    # -- acting -------------------------------------------------------------------------------

    def send(self, event: str | Mapping[str, Any], **properties: Any) -> JourneyTest:
        """The customer does something now: ``send("order_completed", order_id="o-1")``, or a
        whole Segment event dict (its ``timestamp``, if given, moves the clock there)."""
        if isinstance(event, str):
            data: dict[str, Any] = {"type": "track", "event": event, "properties": dict(properties)}
        else:
            data = {"type": "track", **dict(event)}
            if properties:
                data["properties"] = {**(data.get("properties") or {}), **properties}
        if not (data.get("userId") or data.get("anonymousId")):
            data["userId"] = self.customer_id
        self.twin.send(data)
        return self

    def identify(self, **traits: Any) -> JourneyTest:
        """Set the customer's traits now (an ``identify``); may enroll in segment journeys."""
        self.twin.send({"type": "identify", "userId": self.customer_id, "traits": traits})
        return self

    def advance(self, duration: str | dt.timedelta) -> JourneyTest:
        """Let ``duration`` (``"3d"``, ``"1h30m"`` or a timedelta) pass, firing every timer due on the way."""
        self.twin.advance(parse_duration(duration) if isinstance(duration, str) else duration)
        return self

    # -- looking ------------------------------------------------------------------------------

    @property
    def now(self) -> dt.datetime:
        """The virtual time."""
        return self.twin.now

    @property
    def effects(self) -> list[Effect]:
        """Everything that happened to the customer, in order (see :func:`engine.twin.effects`)."""
        return self.twin.effects(self.customer_id)

    def deliveries(self, channel: str | None = None) -> list[Effect]:
        """Every delivery of the customer, whatever became of it (``detail["status"]``, ``["reason"]``)."""
        rows = self.twin.read(deliveries, self.customer_id)
        return [
            delivery_effect(d, self.customer_id, d.sent_at or d.updated_at, "send" if d.status == "sent" else d.status, d.error)
            for d in rows if channel is None or d.channel == channel
        ]

    def sent(self, channel: str | None = None, *, allow_errors: bool = False) -> list[Effect]:
        """The messages sent so far (rendered), optionally on one channel, in the order they were made.

        Raises:
            AssertionError: a delivery failed (unless ``allow_errors``): a test should not
                pass while a template is broken or an address is missing.
        """
        every = self.deliveries(channel)
        broken = [d for d in every if d.effect in ("failed", "dead")]
        if broken and not allow_errors:
            raise AssertionError(f"step {broken[0].step} was not sent: {broken[0].detail.get('reason')}")
        return [d for d in every if d.effect == "send"]

    def held(self, channel: str | None = None) -> list[Effect]:
        """The messages the policy held back, with ``detail["reason"]``."""
        return [d for d in self.deliveries(channel) if d.effect == "held"]

    @property
    def enrollments(self) -> list[EnrollmentState]:
        """The customer's enrollments, oldest first."""
        return self.twin.read(enrollments, self.customer_id)

    @property
    def enrollment(self) -> EnrollmentState:
        """The customer's latest enrollment.

        Raises:
            AssertionError: the customer never entered a journey.
        """
        found = self.enrollments
        if not found:
            raise AssertionError(f"{self.customer_id} is in no journey")
        return found[-1]

    @property
    def profile(self) -> Profile:
        """The customer as the database holds it (traits, stage history, ledger, codes)."""
        found = self.twin.profile(self.customer_id)
        if found is None:
            raise AssertionError(f"no customer {self.customer_id} yet: send an event first")
        return found

    @property
    def traits(self) -> dict[str, Any]:
        """The customer's traits now."""
        return self.profile.traits

    @property
    def stage(self) -> str | None:
        """The customer's lifecycle stage now."""
        return self.profile.stage

    @property
    def points(self) -> int:
        """The customer's points balance now."""
        return self.profile.points

    @property
    def not_entered(self) -> list[dict[str, Any]]:
        """The latest times a journey turned the customer away, oldest first: each has
        ``journey``, ``reason`` (``condition_false``, ``reentry_refused``, ``paused``,
        ``entry_limit``), ``detail`` and ``value`` (the condition's fields)."""
        return self.twin.read(turn_aways, self.customer_id)

    def trace(self, enrollment: EnrollmentState | None = None) -> list[Trace]:
        """How the runtime decided, and how each delivery went, for the latest enrollment (or the one given)."""
        return self.twin.read(trace, (enrollment or self.enrollment).id)

    def path(self, enrollment: EnrollmentState | None = None) -> list[str]:
        """The steps the enrollment ran, in order (a step run twice appears twice)."""
        steps: list[str] = []
        for entry in self.trace(enrollment):
            if entry.step and entry.what in ("run", "wait", "choose", "end", "stage") and (not steps or steps[-1] != entry.step):
                steps.append(entry.step)
        return steps
