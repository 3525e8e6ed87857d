"""The unit of work: what one transaction loaded up front and the rows it writes at the end.

A worker creates one :class:`UnitOfWork` per transaction and hands it to every function
that reads what was loaded for the batch or holds a row back for the end, so nothing
passes between them behind the caller's back:

- applying events: :func:`engine.profiles.preload` loads and locks the customers, then
  :meth:`Orchestrator.begin <engine.orchestrator.Orchestrator.begin>` their points,
  entry history and active enrollments; :func:`engine.profiles.apply_event` and
  ``Orchestrator.on_event`` read them, and ``Orchestrator.finish`` inserts the held
  deliveries, timers, effects, trace and turn-aways, a statement per table;
- firing timers: ``Orchestrator.begin`` (with no events), ``on_timers``, ``finish``;
- judging deliveries: :meth:`PolicyLayer.prefetch <engine.policy.PolicyLayer.prefetch>`
  loads the suppressions and consents that the policy checks then read.

A single event, timer or delivery is a unit of one: there is one path, whatever the
size of the batch. A unit lives as long as its transaction, and is not shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from engine.counters import Tally
from engine.storage.models import Customer, Enrollment, Suppression


@dataclass
class UnitOfWork:
    """One transaction's work: its session, the reads done once for all, the inserts held to the end.

    An empty cache means "not loaded": whoever reads it asks the database instead.
    """

    session: Session
    # profiles.preload: the customers known by the events' user ids, loaded and locked.
    by_user_id: dict[str, Customer] = field(default_factory=dict)
    # Orchestrator.begin: the customers it was given, by id, until an event merges one into another,
    customers: dict[int, Customer] = field(default_factory=dict)
    # and what routing reads.
    points: dict[int, int] = field(default_factory=dict)  # by customer id; dropped when points change
    history: dict[tuple[int, str], list[Enrollment]] = field(default_factory=dict)  # (customer, journey)
    active: dict[int, list[Enrollment]] = field(default_factory=dict)  # locked; filter on status
    # begin (active enrollments) and on_timers (the timers' enrollments): the keys of the
    # effects each of these locked enrollments applied; the new ones are added as they apply.
    applied: dict[str, set[str]] = field(default_factory=dict)
    # Held to the end: Orchestrator.finish inserts them.
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    timers: dict[str, dict[str, Any]] = field(default_factory=dict)
    effects: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    turn_aways: list[dict[str, Any]] = field(default_factory=list)  # counted and trimmed by finish, too
    counts: Tally = field(default_factory=Tally)  # journey stats' counts of the trace (engine.counters)
    # PolicyLayer.prefetch: the suppressions and consents of these customers on these channels.
    policy_customers: set[int] = field(default_factory=set)
    policy_channels: set[str] = field(default_factory=set)
    suppressions: list[Suppression] = field(default_factory=list)
    consents: dict[tuple[int, str, str], bool] = field(default_factory=dict)  # (customer, channel, topic)
