"""The pure runtime: a journey's state machine, its commands, and the entry rules.

The worker (and the simulator, and the tests) call::

    outcome = start(journey, enrollment_id, customer, trigger_event, now, version=v)
    outcome = advance(journey, state, EventArrived(event) | TimerFired(key), customer, now)
    # outcome.state: Enrollment (to_dict/from_dict), outcome.commands: [Command], outcome.trace

and :func:`route` / :func:`may_enter` to decide which enrollments an event concerns and
who enters. Nothing here does I/O, reads a clock or draws a random number.
See docs/runtime.md.
"""

from __future__ import annotations

from engine.runtime.commands import (
    COMMAND_TYPES,
    AwardPoints,
    CancelTimer,
    Command,
    Exit,
    IssueReferral,
    ScheduleTimer,
    Send,
    SetStage,
    Trace,
    UpdateProfile,
    command_from_dict,
    command_to_dict,
)
from engine.runtime.entry import Route, TriggerIndex, concerns, may_enter, route
from engine.runtime.inputs import EventArrived, Input, TimerFired, input_from_dict
from engine.runtime.machine import (
    MAX_STEPS, Outcome, advance, customer_variable, referral_code, render_send, start, stop,
)
from engine.runtime.state import FINAL_STATUSES, STATUSES, Enrollment, Wait

__all__ = [
    "COMMAND_TYPES",
    "FINAL_STATUSES",
    "MAX_STEPS",
    "STATUSES",
    "AwardPoints",
    "CancelTimer",
    "Command",
    "Enrollment",
    "EventArrived",
    "Exit",
    "Input",
    "IssueReferral",
    "Outcome",
    "Route",
    "ScheduleTimer",
    "Send",
    "SetStage",
    "TimerFired",
    "Trace",
    "TriggerIndex",
    "UpdateProfile",
    "Wait",
    "advance",
    "command_from_dict",
    "command_to_dict",
    "concerns",
    "customer_variable",
    "input_from_dict",
    "may_enter",
    "referral_code",
    "render_send",
    "route",
    "start",
    "stop",
]
