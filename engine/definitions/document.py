"""The journey file format as Pydantic models: the source of the JSON Schema and the
first, structural pass of validation. The loader turns validation errors into our own
located messages, then checks meaning (step references, CEL, templates) and builds the
runtime model in :mod:`engine.definitions.model`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)

from engine.definitions.catalog import STAGES
from engine.durations import DURATION_HELP, parse_duration

SCHEMA_ID = "https://journey-engine.dev/schema/journey.schema.json"
ID_PATTERN = r"^[a-z][a-z0-9_]*$"
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
END = "end"  # the step reference that ends the journey
_ID = re.compile(ID_PATTERN)
_TIME = re.compile(TIME_PATTERN)
_REENTRY = re.compile(r"^after\s+(\S+)$")


def _identifier(value: Any) -> Any:
    if isinstance(value, str) and not _ID.match(value):
        raise ValueError(f"'{value}' is not a valid id; use lower-case letters, digits and underscores, starting with a letter")
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    parse_duration(value)  # its ValueError says what is expected
    return value


def _time_of_day(value: Any) -> Any:
    if not isinstance(value, str) or not _TIME.match(value):
        raise ValueError(f"{value!r} is not a time of day; write 24-hour HH:MM in quotes, such as \"09:00\"")
    return value


def _reentry(value: Any) -> Any:
    if value in ("never", "always"):
        return value
    match = _REENTRY.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a re-entry rule; write never, always, or after a duration such as 'after 7d'")
    _duration(match.group(1))
    return value


Identifier = Annotated[str, BeforeValidator(_identifier), WithJsonSchema({"type": "string", "pattern": ID_PATTERN})]
Duration = Annotated[
    str,
    BeforeValidator(_duration),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+[smhdwSMHDW])+$", "description": DURATION_HELP}),
]
TimeOfDay = Annotated[
    str,
    BeforeValidator(_time_of_day),
    WithJsonSchema({"type": "string", "pattern": TIME_PATTERN, "description": "24-hour local time, HH:MM"}),
]
Reentry = Annotated[
    str,
    BeforeValidator(_reentry),
    WithJsonSchema({"type": "string", "pattern": r"^(never|always|after\s+(\d+[smhdwSMHDW])+)$"}),
]
Cel = Annotated[str, Field(min_length=1, description="a CEL expression, see docs/journeys.md")]
StepRef = Annotated[str, Field(min_length=1, description="a step id, or 'end' to end the journey")]
Stage = Literal[STAGES]  # type: ignore[valid-type]
Kind = Literal["marketing", "transactional"]


def by_key(*keys: str) -> Callable[[Any], str | None]:
    """A discriminator picking the union member whose key is present (exactly one)."""

    def pick(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            value = value.model_dump(by_alias=True, exclude_none=True)
        if not isinstance(value, dict):
            return None
        present = [key for key in keys if key in value]
        return present[0] if len(present) == 1 else None

    return pick


def one_of(members: dict[str, Any], error_type: str, message: str) -> Any:
    """A union of models told apart by which of their keys (the dict's keys) is present."""
    tagged = tuple(Annotated[model, Tag(key)] for key, model in members.items())
    return Annotated[
        Union[tagged],  # noqa: UP007 - a union of a tuple built at run time has no X | Y spelling
        Discriminator(by_key(*members), custom_error_type=error_type, custom_error_message=message),
    ]


def _by_type(value: Any) -> str:
    return "text" if isinstance(value, str) else "other"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class EventMatch(_Model):
    """An event, with an optional condition it must meet."""

    event: Identifier = Field(description="the event name, as sent in track()")
    when: Cel | None = Field(None, description="a CEL condition over `event`, `trigger` and `customer`")


class EndEventSpec(EventMatch):
    """A goal or exit event: ends the enrollment wherever the customer is."""

    goto: StepRef | None = Field(None, description="a step to run before ending (e.g. to clean up)")


class GoalSpec(EndEventSpec):
    """The goal: reaching it ends the enrollment as a conversion."""

    within: Duration | None = Field(
        None, description="the conversion window (default 30d): a customer whose enrollment ended without converting "
                          "(a holdout's ends at once) and who reaches the goal this long after entering counts as converted")


class EventTrigger(EventMatch):
    """Enroll when this event arrives (and the condition holds)."""


class SegmentTrigger(_Model):
    """Enroll when the customer enters a segment: the condition starts to hold as traits change."""

    segment: Identifier = Field(description="the segment's name")
    when: Cel = Field(description="a CEL condition over `customer`")


if TYPE_CHECKING:  # the union one_of builds at run time, as mypy can see it
    Trigger: TypeAlias = EventTrigger | SegmentTrigger
else:
    Trigger = one_of({"event": EventTrigger, "segment": SegmentTrigger}, "trigger_kind", "needs either 'event' or 'segment'")


class Entry(_Model):
    """Who may enroll, and how often."""

    reentry: Reentry = Field("never", description="never, always, or after a duration ('after 7d')")
    concurrent: int = Field(1, ge=1, description="enrollments a customer may have at once")


class QuietHours(_Model):
    """No message is sent between start and end in the customer's time zone."""

    start: TimeOfDay
    end: TimeOfDay
    action: Literal["defer", "drop"] = "defer"


class FrequencyCap(_Model):
    """At most ``max`` messages from this journey per customer in each ``per`` window."""

    max: int = Field(ge=1)
    per: Duration


class PolicySpec(_Model):
    """How the policy layer treats this journey's messages."""

    kind: Kind = Field("marketing", description="marketing, or transactional (skips consent, quiet hours and caps)")
    topic: Identifier | None = Field(None, description="the subscription topic people unsubscribe from")
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None


class Sample(_Model):
    """Sample data used to type-check conditions and render templates at load time."""

    customer: dict[str, Any] = Field(default_factory=dict, description="traits of a typical customer")
    events: dict[str, dict[str, Any]] = Field(default_factory=dict, description="a typical payload per event name")


class _Step(_Model):
    id: Identifier
    description: str | None = None
    stage: Stage | None = Field(None, description="move the customer to this lifecycle stage")


class _Continues(_Step):
    goto: StepRef | None = Field(None, description="the step after this one, if not the next in the list")


class Send(_Model):
    """A message through a channel, from a template file or inline parts."""

    channel: str = Field(description="email, sms, push, webhook, retargeting or log")
    template: Identifier | None = Field(None, description="a template in templates/: <name>.<part>.j2")
    subject: str | None = None
    title: str | None = None
    text: str | None = None
    html: str | None = None
    body: str | None = Field(None, description="a JSON body template (webhook)")
    url: str | None = Field(None, description="where a webhook posts")
    audience: Identifier | None = Field(None, description="a retargeting audience")
    action: Literal["add", "remove"] | None = Field(None, description="add to or remove from the audience")
    kind: Kind | None = Field(None, description="marketing or transactional for this message (default: the journey's policy.kind)")


class SendStep(_Continues):
    send: Send


class WaitTime(_Model):
    """Wait (optionally a duration first) until a local time of day."""

    for_: Duration | None = Field(None, alias="for", description="wait this long first")
    until: TimeOfDay = Field(description="then until this time in the customer's time zone")


class WaitStep(_Continues):
    wait: Annotated[
        Annotated[Duration, Tag("text")] | Annotated[WaitTime, Tag("other")],
        Discriminator(_by_type),
    ]


class WaitFor(EventMatch):
    """Wait for an event (meeting the condition), at most ``timeout``."""

    timeout: Duration | None = None


class WaitUntilStep(_Step):
    wait_until: WaitFor
    on_event: StepRef | None = Field(None, description="where to go when the event comes (default: next)")
    on_timeout: StepRef | None = Field(None, description="where to go on timeout (default: next)")


class BranchCase(_Model):
    when: Cel
    goto: StepRef


class BranchElse(_Model):
    else_: StepRef = Field(alias="else")


if TYPE_CHECKING:
    BranchItem: TypeAlias = BranchCase | BranchElse
else:
    BranchItem = one_of({"when": BranchCase, "else": BranchElse}, "branch_kind", "needs either 'when' with 'goto', or 'else'")


class BranchStep(_Step):
    branch: list[BranchItem] = Field(min_length=1)


class SplitPath(_Model):
    weight: float = Field(ge=0, description="percent of customers; all weights add up to 100")
    name: Identifier | None = None
    goto: StepRef | None = None


class HoldoutPath(_Model):
    holdout: float = Field(ge=0, description="percent held out: sent nothing, reported as the control group")


if TYPE_CHECKING:
    SplitItem: TypeAlias = SplitPath | HoldoutPath
else:
    SplitItem = one_of(
        {"weight": SplitPath, "holdout": HoldoutPath}, "split_kind", "needs either 'weight' (with 'goto' or 'name') or 'holdout'"
    )


class SplitStep(_Step):
    split: list[SplitItem] = Field(min_length=2)


class Update(_Model):
    traits: dict[str, Any] | None = Field(None, description="traits to set on the profile")
    stage: Stage | None = None


class UpdateStep(_Continues):
    update: Update


class Reward(_Model):
    points: Annotated[
        Annotated[int, Tag("other")] | Annotated[Cel, Tag("text")],
        Discriminator(_by_type),
        Field(description="points, or a CEL expression giving them"),
    ]
    reason: str | None = None
    to: Literal["customer", "referrer"] = "customer"


class RewardStep(_Continues):
    reward: Reward


class Referral(_Model):
    program: Identifier = "default"
    store_as: Identifier = Field("referral_code", description="the customer trait that receives the code")


class ReferralStep(_Continues):
    referral: Referral


class Exit(_Model):
    conversion: bool = False
    reason: str | None = None


class ExitStep(_Step):
    exit: Exit


STEP_KINDS: dict[str, type[_Step]] = {
    "send": SendStep,
    "wait": WaitStep,
    "wait_until": WaitUntilStep,
    "branch": BranchStep,
    "split": SplitStep,
    "update": UpdateStep,
    "reward": RewardStep,
    "referral": ReferralStep,
    "exit": ExitStep,
}

if TYPE_CHECKING:
    Step: TypeAlias = SendStep | WaitStep | WaitUntilStep | BranchStep | SplitStep | UpdateStep | RewardStep | ReferralStep | ExitStep
else:
    Step = one_of(STEP_KINDS, "step_kind", "a step needs exactly one of " + ", ".join(STEP_KINDS))


class JourneyDocument(_Model):
    """A journey file."""

    model_config = ConfigDict(title="Journey", extra="forbid", populate_by_name=True, frozen=True)

    id: Identifier
    name: str = Field(min_length=1)
    description: str | None = None
    stage: Stage
    trigger: Trigger
    entry: Entry = Entry()
    goal: GoalSpec | None = Field(None, description="reaching it ends the journey as a conversion")
    exit_on: list[EndEventSpec] = Field(default_factory=list, description="events that end the journey")
    policy: PolicySpec = PolicySpec()
    sample: Sample = Sample()
    steps: list[Step] = Field(min_length=1)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07, as yaml-language-server reads it) of a journey file."""
    schema = JourneyDocument.model_json_schema(by_alias=True, ref_template="#/definitions/{model}")
    definitions = schema.pop("$defs", {})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        **schema,
        "definitions": definitions,
    }


def json_schema_text() -> str:
    """:func:`json_schema` as the committed file holds it."""
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
