"""Unit-test your journeys on a virtual clock: ``JourneyTest``, built on the simulator.

::

    from engine.testing import JourneyTest

    def test_reminder_after_an_hour():
        t = JourneyTest("journeys/cart_abandonment.yaml", customer={"first_name": "Ada"})
        t.send("checkout_started", cart_value=120, order_id="o-1", currency="EUR", item_count=2)
        t.advance("59m")
        assert t.sent() == []
        t.advance("1m")
        assert [s.template for s in t.sent("email")] == ["cart_reminder"]
        t.send("order_completed", order_id="o-1")
        assert t.enrollment.status == "converted"

Nothing is sent anywhere: sends are rendered and recorded (a template that fails to render
is recorded with its ``error``, and :meth:`JourneyTest.sent` raises on it unless asked not to).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.definitions import load_journey
from engine.definitions.model import Journey
from engine.durations import parse_duration
from engine.runtime import Enrollment, Trace
from engine.simulate import Effect, SimCustomer, Simulator

#: Where a JourneyTest's clock starts unless told otherwise: a Monday, 09:00 UTC.
DEFAULT_START = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone.utc)


class JourneyTest:
    """One customer going through one or more journeys, on a virtual clock.

    Args:
        journeys: a journey file path, a loaded :class:`~engine.definitions.Journey`, or a list of them.
        customer: the customer's traits (``timezone`` among them sets their time zone).
        customer_id: the customer's id (default ``test-customer``).
        start: the clock's start (aware datetime; default :data:`DEFAULT_START`).
        stage: the customer's lifecycle stage at the start.
        points: the customer's points at the start.
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
        loaded = [item if isinstance(item, Journey) else load_journey(item) for item in items]
        self.journeys = {j.id: j for j in loaded}
        self.simulator = Simulator(loaded, start=start)
        self.customer_id = customer_id
        self._messages = itertools.count(1)
        person = self.simulator.customer(customer_id)
        person.stage, person.points = stage, points
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
        data.setdefault("userId", self.customer_id)
        data.setdefault("messageId", f"test-{next(self._messages)}")
        self.simulator.send(data)
        return self

    def identify(self, **traits: Any) -> JourneyTest:
        """Set the customer's traits now (an ``identify``); may enroll in segment journeys."""
        self.simulator.send({"type": "identify", "userId": self.customer_id, "traits": traits, "messageId": f"test-{next(self._messages)}"})
        return self

    def advance(self, duration: str | dt.timedelta) -> JourneyTest:
        """Let ``duration`` (``"3d"``, ``"1h30m"`` or a timedelta) pass, firing every timer due on the way."""
        self.simulator.advance(parse_duration(duration) if isinstance(duration, str) else duration)
        return self

    # -- looking ------------------------------------------------------------------------------

    @property
    def now(self) -> dt.datetime:
        """The virtual time."""
        if self.simulator.now is None:  # pragma: no cover - the constructor sets it
            raise RuntimeError("the clock has not started")
        return self.simulator.now

    @property
    def effects(self) -> list[Effect]:
        """Everything that happened to the customer, in order."""
        return self.simulator.timeline(self.customer_id)

    def sent(self, channel: str | None = None, *, allow_errors: bool = False) -> list[Effect]:
        """The messages sent so far (rendered), optionally on one channel.

        Raises:
            AssertionError: a message failed to render (unless ``allow_errors``): a test should
                not pass while a template is broken.
        """
        sends = [e for e in self.effects if e.effect == "send" and (channel is None or e.channel == channel)]
        broken = [e for e in sends if "error" in e.detail]
        if broken and not allow_errors:
            raise AssertionError(f"step {broken[0].step} did not render: {broken[0].detail['error']}")
        return sends

    @property
    def enrollments(self) -> list[Enrollment]:
        """The customer's enrollments, oldest first."""
        return self.simulator.enrollments_of(self.customer_id)

    @property
    def enrollment(self) -> Enrollment:
        """The customer's latest enrollment.

        Raises:
            AssertionError: the customer never entered a journey (with the reasons, if any).
        """
        if not self.enrollments:
            refused = [e.detail.get("reason") for e in self.effects if e.effect == "not_entered"]
            raise AssertionError("the customer is in no journey" + (f": {'; '.join(refused)}" if refused else ""))
        return self.enrollments[-1]

    @property
    def profile(self) -> SimCustomer:
        """The customer as the simulator holds it (traits, stage history, ledger, codes)."""
        return self.simulator.customer(self.customer_id)

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

    def trace(self, enrollment: Enrollment | None = None) -> list[Trace]:
        """How the runtime decided, for the latest enrollment (or the one given)."""
        return self.simulator.traces.get((enrollment or self.enrollment).id, [])

    def path(self, enrollment: Enrollment | None = None) -> list[str]:
        """The steps the enrollment ran, in order (a step run twice appears twice)."""
        steps: list[str] = []
        for entry in self.trace(enrollment):
            if entry.step and entry.what in ("run", "wait", "choose", "end", "stage") and (not steps or steps[-1] != entry.step):
                steps.append(entry.step)
        return steps
