"""The checked, compiled journey the runtime walks: typed steps with resolved targets.

Every step target (``next``, ``goto``, ``on_event``...) is a step id or ``None``, which
ends the enrollment. Conditions are compiled :class:`~engine.rules.Condition` objects and
templates compiled :class:`~engine.templates.Template` objects, so running a journey
never parses anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.rules import Condition, Expression, ExpressionResult, choose_weighted
from engine.settings import FrequencyCap
from engine.templates import Template


@dataclass(frozen=True)
class Step:
    """What every step has.

    Attributes:
        id: unique within the journey.
        next: the step that follows (the next in the file, or ``goto``); None ends the journey.
        stage: the lifecycle stage the customer moves to when the step runs, if any.
        line: where the step starts in the journey file, for messages.
    """

    id: str
    next: str | None
    stage: str | None = None
    description: str | None = None
    line: int | None = None

    @property
    def kind(self) -> str:
        """``send``, ``wait``, ``wait_until``, ``branch``, ``split``, ``update``, ``reward``,
        ``referral`` or ``exit``."""
        return _KIND_OF[type(self)]

    def targets(self) -> list[str | None]:
        """Every step this one can lead to (None is the end of the journey)."""
        return [self.next]


@dataclass(frozen=True)
class SendStep(Step):
    """Send a message; ``parts`` are the compiled templates by part (subject, text, html...).

    ``message_kind`` is the step's own ``kind`` (``marketing`` or ``transactional``), or None
    to follow the journey's ``policy.kind``: :meth:`Journey.send_kind` gives the one in force.
    """

    channel: str = ""
    template: str | None = None  # the template's name, or None for inline parts
    parts: Mapping[str, Template] = field(default_factory=dict)
    url: str | None = None
    audience: str | None = None
    action: str | None = None  # retargeting: add or remove
    message_kind: str | None = None

    def render(self, context: Mapping[str, Any]) -> dict[str, str]:
        """Render every part; raises :class:`~engine.errors.TemplateError` if one fails."""
        return {name: template.render(context) for name, template in self.parts.items()}


@dataclass(frozen=True)
class WaitStep(Step):
    """Wait ``duration`` (if set), then until the local time ``until`` (if set)."""

    duration: dt.timedelta | None = None
    until: dt.time | None = None

    def due(self, start: dt.datetime, timezone: dt.tzinfo) -> dt.datetime:
        """When the wait ends, for a wait started at ``start`` (aware) by a customer in ``timezone``."""
        moment = start + (self.duration or dt.timedelta())
        if self.until is None:
            return moment
        local = moment.astimezone(timezone)
        candidate = local.replace(hour=self.until.hour, minute=self.until.minute, second=0, microsecond=0)
        if candidate <= local:
            candidate = (local + dt.timedelta(days=1)).replace(
                hour=self.until.hour, minute=self.until.minute, second=0, microsecond=0
            )
        return candidate.astimezone(start.tzinfo)


@dataclass(frozen=True)
class WaitUntilStep(Step):
    """Wait for ``event`` meeting ``when``; go to ``on_event``, or ``on_timeout`` after ``timeout``."""

    event: str = ""
    when: Condition | None = None
    timeout: dt.timedelta | None = None
    on_event: str | None = None
    on_timeout: str | None = None

    def targets(self) -> list[str | None]:
        return [self.on_event] + ([self.on_timeout] if self.timeout is not None else [])


@dataclass(frozen=True)
class BranchCase:
    """One ``when``/``goto`` of a branch."""

    when: Condition
    goto: str | None


@dataclass(frozen=True)
class BranchStep(Step):
    """The first case whose condition holds picks the path; else ``next`` (the ``else``)."""

    cases: tuple[BranchCase, ...] = ()

    def targets(self) -> list[str | None]:
        return [case.goto for case in self.cases] + [self.next]


@dataclass(frozen=True)
class SplitPath:
    """One path of a split; a holdout path sends nothing and is the control group."""

    name: str
    weight: float
    goto: str | None
    holdout: bool = False


@dataclass(frozen=True)
class SplitStep(Step):
    """Weighted paths, the same for a customer every time (see :func:`engine.rules.bucket`)."""

    paths: tuple[SplitPath, ...] = ()

    def choose(self, customer_id: str, journey_id: str) -> SplitPath:
        """The path this customer takes in this journey."""
        index = choose_weighted([p.weight for p in self.paths], customer_id, journey_id, salt=self.id)
        return self.paths[index]

    def targets(self) -> list[str | None]:
        return [path.goto for path in self.paths]


@dataclass(frozen=True)
class UpdateStep(Step):
    """Set profile traits and/or the lifecycle stage."""

    traits: Mapping[str, Any] = field(default_factory=dict)
    set_stage: str | None = None


@dataclass(frozen=True)
class RewardStep(Step):
    """Add loyalty points to the ledger of the customer or of their referrer."""

    points: int | Expression = 0
    reason: str | None = None
    to: str = "customer"

    def amount(self, activation: Mapping[str, Any]) -> ExpressionResult:
        """The points to add; an expression that fails gives ``error`` and no points."""
        if isinstance(self.points, Expression):
            result = self.points.evaluate(activation)
            if result.error is None and not isinstance(result.value, (int, float)):
                return ExpressionResult(None, f"points gave {result.value!r}, not a number")
            if result.error is None:
                return ExpressionResult(int(result.value))
            return result
        return ExpressionResult(self.points)


@dataclass(frozen=True)
class ReferralStep(Step):
    """Issue (or reuse) the customer's referral code and store it in trait ``store_as``."""

    program: str = "default"
    store_as: str = "referral_code"


@dataclass(frozen=True)
class ExitStep(Step):
    """End the enrollment, as a conversion if ``conversion``."""

    conversion: bool = False
    reason: str | None = None

    def targets(self) -> list[str | None]:
        return []


_KIND_OF: dict[type, str] = {
    SendStep: "send",
    WaitStep: "wait",
    WaitUntilStep: "wait_until",
    BranchStep: "branch",
    SplitStep: "split",
    UpdateStep: "update",
    RewardStep: "reward",
    ReferralStep: "referral",
    ExitStep: "exit",
}


@dataclass(frozen=True)
class Trigger:
    """Enroll on ``event`` (when ``when`` holds), or on entering ``segment`` (``when`` over customer)."""

    event: str | None = None
    segment: str | None = None
    when: Condition | None = None


@dataclass(frozen=True)
class EndEvent:
    """A goal or exit event; ``goto`` is a step to run before ending, if any.

    ``within`` is a goal's conversion window: reached that long after entering, the goal
    converts a customer whose enrollment already ended (30 days unless the journey file's
    ``goal.within`` says otherwise).
    """

    event: str
    when: Condition | None = None
    goto: str | None = None
    within: dt.timedelta = dt.timedelta(days=30)


@dataclass(frozen=True)
class Entry:
    """Re-entry (``never``, ``always`` or ``after``, with ``reentry_after``) and concurrency."""

    reentry: str = "never"
    reentry_after: dt.timedelta | None = None
    concurrent: int = 1


@dataclass(frozen=True)
class QuietHours:
    start: dt.time
    end: dt.time
    action: str = "defer"


@dataclass(frozen=True)
class JourneyPolicy:
    """How the policy layer treats this journey's messages."""

    kind: str = "marketing"
    topic: str | None = None
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None


@dataclass(frozen=True)
class Journey:
    """A checked journey, ready to run. ``steps`` are in file order; the first one starts."""

    id: str
    name: str
    stage: str
    trigger: Trigger
    steps: tuple[Step, ...]
    description: str | None = None
    entry: Entry = Entry()
    goal: EndEvent | None = None
    exit_on: tuple[EndEvent, ...] = ()
    policy: JourneyPolicy = JourneyPolicy()
    sample: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    locations: Mapping[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)
    _by_id: dict[str, Step] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id.update((step.id, step) for step in self.steps)

    @property
    def first(self) -> Step:
        """The step every enrollment starts at."""
        return self.steps[0]

    def step(self, step_id: str) -> Step:
        """The step with this id; raises KeyError if there is none."""
        return self._by_id[step_id]

    def send_kind(self, step: SendStep) -> str:
        """``marketing`` or ``transactional``: the step's own kind, else the journey's."""
        return step.message_kind or self.policy.kind
