"""What journeys achieve: step funnels, experiments with honest statistics, the stage funnel.

Every figure is read set-wise from the database, never by loading enrollments into Python:

- ``journey_counts`` (:mod:`engine.counters`): of the enrollments of a journey version
  that *started* on each UTC day, how many entered, visited each step (a send's ``run``,
  a wait's ``wait``, a split's ``choose`` with the path, a branch's true ``condition``),
  ended with each status and reason (with the split paths they had taken), and converted
  after they ended. The workers add to them in the transactions that write the trace;
- ``enrollments``: where the active ones wait (``step``, ``updated_at``), from an index;
  and the customers of a journey that lets them re-enter (counted once each);
- ``deliveries``: each step's sends by status and the reasons a policy held them, from an index;
- ``not_entered_counts``: the customers turned away, by reason;
- ``stage_changes`` and ``customers.stage``: the stage funnel.

A customer **converted** when the enrollment converted (the goal, or a converting exit
step) or when the customer reached the goal (with its ``when``) within the goal's
conversion window (``goal.within``, 30 days by default) after an enrollment that had
ended without converting: that is what makes a holdout measurable (its enrollment ends at
once, but its customers still buy). It applies to every variant alike, so the comparison
stays fair; the orchestrator decides it as the event arrives
(:func:`engine.runtime.machine.converted_after_end`).

The API (``GET /v1/journeys/{id}/stats``), ``journey stats`` and the metrics call the
functions here; the statistics (:func:`compare`) are pure and tested on their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, case, func, or_, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from engine import counters
from engine.definitions import STAGES, Journey
from engine.definitions.model import BranchStep, SplitStep
from engine.durations import parse_duration
from engine.errors import NotFoundError, PayloadError, Problem
from engine.runtime.machine import SPLIT_PATH
from engine.segment import parse_time
from engine.storage.models import (
    Customer,
    Delivery,
    Enrollment,
    JourneyCount,
    JourneyRecord,
    JourneyVersion,
    NotEnteredCount,
    StageChange,
)

if TYPE_CHECKING:
    from engine.services import Services

#: Fewer customers than this in a variant (or in its control) and the comparison says
#: "not enough data" and is never significant. 100 keeps the normal approximation of the
#: two-proportion z-test sound for conversion rates from about 10% (n*p >= 10, as the
#: usual rule asks) while a journey with a few hundred customers still gets an answer;
#: Klaviyo's 500 is stricter. Callers may ask for more (``min_sample``).
MIN_SAMPLE = 100
#: The largest version (and min_sample) a query may name: PostgreSQL's integer.
MAX_VERSION = 2**31 - 1
#: Below this many conversions or non-conversions expected in a group, the z-test's normal
#: approximation does not hold either: also "not enough data".
MIN_EXPECTED = 5
#: The two-sided significance level; the interval is the matching (1 - ALPHA) one.
ALPHA = 0.05
#: The window of stats when no ``since`` is given.
DEFAULT_SINCE = timedelta(days=30)
#: PostgreSQL's work_mem for the stats' transaction.
STATS_WORK_MEM = "64MB"
#: Draws of the Beta-Binomial model for P(beats control); the seed makes it repeatable.
_DRAWS = 20_000


@dataclass(frozen=True)
class Window:
    """The enrollments (or stage changes) that started in ``[since, until)``."""

    since: datetime
    until: datetime


# -- reading the parameters the API and the CLI share ---------------------------------------


def read_window(params: Mapping[str, str | None], now: datetime) -> Window:
    """``since`` and ``until`` as ISO times or durations back from now (``30d``).

    Raises:
        PayloadError: one of them is neither, or since is not before until.
    """
    problems: list[Problem] = []
    since = _moment(params.get("since"), now, "since", problems) or now - DEFAULT_SINCE
    until = _moment(params.get("until"), now, "until", problems) or now
    if not problems and since >= until:
        problems.append(Problem("since", f"{since.isoformat()} is not before until ({until.isoformat()}); "
                                         "give an earlier since or a later until"))
    if problems:
        raise PayloadError("the window", problems)
    return Window(since, until)


def read_options(params: Mapping[str, str | None]) -> dict[str, Any]:
    """``version`` and ``min_sample`` from query parameters.

    Raises:
        PayloadError: one is malformed; every problem is named.
    """
    problems: list[Problem] = []
    options: dict[str, Any] = {}
    version = params.get("version")
    if version is not None:
        if not str(version).isdigit() or not 1 <= int(str(version)) <= MAX_VERSION:
            problems.append(Problem("version", f"{version!r} is not a version number; give 1, 2, ..."))
        else:
            options["version"] = int(str(version))
    if params.get("window") is not None:
        problems.append(Problem("window", "the conversion window is no longer a query parameter: it is the journey "
                                          "file's goal.within (default 30d); drop window from the query"))
    minimum = params.get("min_sample")
    if minimum is not None:
        if not str(minimum).isdigit() or not 2 <= int(str(minimum)) <= MAX_VERSION:
            problems.append(Problem("min_sample", f"{minimum!r} is not a whole number of customers from 2 to {MAX_VERSION}"))
        else:
            options["min_sample"] = int(str(minimum))
    if problems:
        raise PayloadError("the stats query", problems)
    return options


def _moment(text: str | None, now: datetime, name: str, problems: list[Problem]) -> datetime | None:
    if text is None:
        return None
    try:
        back = parse_duration(str(text))
    except ValueError:
        pass
    else:
        try:
            return now - back
        except OverflowError:
            return datetime.min.replace(tzinfo=now.tzinfo)  # further back than time goes: from the start
    try:
        return parse_time(str(text))  # the API's one reading of a time (RFC 3339 and ISO 8601)
    except ValueError:
        problems.append(Problem(name, f"{text!r} is neither a time (2026-11-01T00:00:00Z) nor a duration back from now (30d)"))
        return None


# -- what the API and the CLI call ----------------------------------------------------------


def journey_stats_now(services: Services, journey_id: str, params: dict[str, str | None]) -> dict[str, Any]:
    """The stats of one journey as the API answers them (the CLI's ``--json`` prints exactly this).

    Raises:
        PayloadError: a query parameter is malformed.
        NotFoundError: no such journey or version.
    """
    now = services.clock()
    window = read_window(params, now)
    options = read_options(params)
    with services.sessions() as session:
        definitions = definitions_for(session, services.deployed, journey_id, options.get("version"))
        return journey_stats(session, journey_id, definitions, window, now, **options)


def stage_funnel_now(services: Services, params: dict[str, str | None]) -> dict[str, Any]:
    """The stage funnel for the window in ``params`` (``since``, ``until``)."""
    now = services.clock()
    window = read_window(params, now)
    with services.sessions() as session:
        return stage_funnel(session, window, now)


def journeys_now(services: Services) -> list[dict[str, Any]]:
    """The deployed journeys with their versions and status."""
    with services.sessions() as session:
        return list_journeys(session)



# -- the deployed journeys -------------------------------------------------------------------


def list_journeys(session: Session) -> list[dict[str, Any]]:
    """The deployed journeys: status, current version, every version, running enrollments."""
    records = session.execute(select(JourneyRecord).order_by(JourneyRecord.id)).scalars().all()
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in session.execute(
        select(JourneyVersion.journey_id, JourneyVersion.version, JourneyVersion.deployed_at,
               JourneyVersion.trigger_event).order_by(JourneyVersion.journey_id, JourneyVersion.version)
    ):
        versions[row.journey_id].append(
            {"version": row.version, "deployedAt": row.deployed_at.isoformat(), "trigger": row.trigger_event}
        )
    running = dict(
        session.execute(
            select(Enrollment.journey_id, func.count()).where(Enrollment.status == "active").group_by(Enrollment.journey_id)
        ).all()
    )
    return [
        {"id": r.id, "status": r.status, "version": r.current_version, "updatedAt": r.updated_at.isoformat(),
         "active": int(running.get(r.id, 0)), "versions": versions[r.id]}
        for r in records
    ]


# -- per journey ----------------------------------------------------------------------------


def journey_stats(
    session: Session,
    journey_id: str,
    definitions: Mapping[int, Journey],
    window: Window,
    now: datetime,
    *,
    version: int | None = None,
    min_sample: int = MIN_SAMPLE,
) -> dict[str, Any]:
    """The stats of ``journey_id`` (one ``version``, or all) for enrollments started in
    ``window``, rounded out to whole UTC days (:func:`whole_days`).

    Step visits, exits, paths taken and conversions are summed from the counts the
    workers keep (:mod:`engine.counters`); the waiting customers and the deliveries are
    counted from indexes (deliveries *written* in the window).

    Args:
        definitions: the compiled versions the cohort runs, by version (for the step order,
            the goal, the splits' paths and the branches' cases).
        now: the services' clock, for how long customers have been waiting.

    Returns:
        JSON-ready: ``journey``, ``entered``, ``converted``, ``steps``, ``edges``,
        ``variants``, ``not_entered`` (see docs/analytics.md).
    """
    if session.get_bind().dialect.name == "postgresql":
        # The planner's high cost estimates for a big cohort switch JIT compilation on, which
        # costs more than it saves: only this transaction is changed.
        session.execute(text(f"SET LOCAL work_mem = '{STATS_WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
    window = whole_days(window)
    counts = counters.read(session, journey_id, version, *_days(window))
    branches, splits = _choosers(definitions)

    entered = sum(n for key, n in counts if key.what == "entered")
    by_status: dict[str, int] = defaultdict(int)
    conversions = 0
    # The conversions of each split's paths, by path name.
    converted_in: dict[tuple[str, str], int] = defaultdict(int)
    for key, n in counts:
        if key.what == "ended":
            by_status[key.detail] += n
        if (key.what == "ended" and key.detail == "converted") or key.what == "converted_later":
            conversions += n
            for split_id, path in counters.read_variants(key.value).items():
                converted_in[(split_id, path)] += n
    active = entered - sum(by_status.values())
    if active:
        by_status["active"] += active
    # Re-entry ``never`` (in every version counted) lets a customer in once: customers are
    # enrollments. Otherwise count them, per variant too (a customer re-enters the same variant).
    once = all(j.entry.reentry == "never" for j in definitions.values())
    if once:
        customers, converted_customers = entered, conversions
        variant_rows = []
        for key, n in counts:
            if key.what == "choose" and key.step in splits and key.detail.startswith(SPLIT_PATH):
                name = key.detail.removeprefix(SPLIT_PATH)
                variant_rows.append((key.step, name, n, converted_in.get((key.step, name), 0)))
    else:
        cohort = _cohort(journey_id, window, version)
        converted = case((or_(cohort.c.status == "converted", cohort.c.converted_at.is_not(None)), 1), else_=0)
        per_customer = (
            select(func.max(converted).label("converted")).group_by(cohort.c.customer_id).subquery("per_customer")
        )
        customers, converted_customers = session.execute(
            select(func.count(), func.coalesce(func.sum(per_customer.c.converted), 0))
        ).one()
        variant_rows = _variant_customers(session, cohort, converted, sorted(splits))

    steps: dict[str, dict[str, Any]] = {}
    for journey in [definitions[v] for v in sorted(definitions, reverse=True)]:
        for step in journey.steps:
            steps.setdefault(step.id, _step(step.id, step.kind))

    edges_rows = [(key.step, key.what, key.detail or None, key.value or None, n) for key, n in counts if key.step]
    kinds = {step.id: step.kind for journey in definitions.values() for step in journey.steps}
    for step_id, what, detail, status, count in edges_rows:
        row = steps.setdefault(step_id, _step(step_id, None))
        kind = kinds.get(step_id)
        if what == "end":
            key_ = detail or status or "unknown"
            row["exited"][key_] = row["exited"].get(key_, 0) + int(count)
            if status == "converted":
                row["converted"] += int(count)
            visit = kind == "exit"
        elif what == "run":
            visit = kind in ("send", "update", "reward", "referral") or (detail or "").startswith(counters.CLEAN_UP)
        else:  # wait, choose, a branch's true condition
            visit = True
        if visit:
            row["entered"] += int(count)

    for step_id, count, oldest, median in _waiting(session, journey_id, version, window):
        row = steps.setdefault(step_id, _step(step_id, None))
        row["waiting"] = int(count)
        row["wait"] = {"oldest_seconds": _seconds(now, oldest), "median_seconds": _seconds(now, median)}

    for step_id, status, count in _deliveries(session, journey_id, version, window):
        row = steps.setdefault(step_id, _step(step_id, None))
        row["deliveries"][status] = row["deliveries"].get(status, 0) + int(count)
    for step_id, reason, count in _held(session, journey_id, version, window):
        row = steps.setdefault(step_id, _step(step_id, None))
        short = held_kind(reason)
        row["held"][short] = row["held"].get(short, 0) + int(count)

    edges, variants = _choices(edges_rows, variant_rows, branches, splits, steps, min_sample)
    return {
        "journey": journey_id,
        "version": version,
        "since": window.since.isoformat(),
        "until": window.until.isoformat(),
        "conversion_window": _conversion_window(definitions),
        "entered": int(entered),
        "customers": int(customers),
        "converted": int(converted_customers),
        "converted_enrollments": int(conversions),
        "rate": _rate(int(converted_customers), int(customers)),
        "status": dict(sorted(by_status.items())),
        "steps": list(steps.values()),
        "edges": edges,
        "variants": variants,
        "not_entered": _not_entered(session, journey_id, version, window),
    }


def _conversion_window(definitions: Mapping[int, Journey]) -> float | None:
    """The newest version's conversion window (its goal's ``within``), in seconds."""
    newest = definitions[max(definitions)] if definitions else None
    return newest.goal.within.total_seconds() if newest is not None and newest.goal is not None else None


def _not_entered(session: Session, journey_id: str, version: int | None, window: Window) -> dict[str, int]:
    """The customers the journey (one ``version``, or all) turned away, by reason, on the UTC
    days of ``window`` (:func:`whole_days`): the counters the orchestrator keeps per day in the
    turning-away transaction (so a query sums a row per reason and day, never the raw rows)."""
    first, last = _days(window)
    query = (
        select(NotEnteredCount.reason, func.sum(NotEnteredCount.count))
        .where(NotEnteredCount.journey_id == journey_id, NotEnteredCount.day.between(first, last))
        .group_by(NotEnteredCount.reason)
    )
    if version is not None:
        query = query.where(NotEnteredCount.version == version)
    return {reason: int(count) for reason, count in sorted(session.execute(query).all())}


def definitions_for(session: Session, deployed: Any, journey_id: str, version: int | None) -> dict[int, Journey]:
    """The compiled versions of ``journey_id`` that stats need (``version``, or every one).

    Raises:
        NotFoundError: no such journey (or version) is deployed.
    """
    found = list(session.execute(
        select(JourneyVersion.version).where(JourneyVersion.journey_id == journey_id).order_by(JourneyVersion.version)
    ).scalars())
    if not found:
        raise NotFoundError(f"no deployed journey has the id {journey_id!r}; GET /v1/journeys (or `journey journeys`) lists them")
    if version is not None and version not in found:
        raise NotFoundError(f"journey {journey_id!r} has no version {version}; its versions are "
                            + ", ".join(str(v) for v in found))
    wanted = [version] if version is not None else found
    return {v: deployed.get(journey_id, v, session) for v in wanted}


def _step(step_id: str, kind: str | None) -> dict[str, Any]:
    return {"id": step_id, "kind": kind, "entered": 0, "waiting": 0, "wait": None, "exited": {}, "converted": 0,
            "deliveries": {}, "held": {}}


def _cohort(journey_id: str, window: Window, version: int | None) -> Any:
    where = [Enrollment.journey_id == journey_id, Enrollment.started_at >= window.since,
             Enrollment.started_at < window.until]
    if version is not None:
        where.append(Enrollment.version == version)
    return (
        select(Enrollment.id, Enrollment.customer_id, Enrollment.status, Enrollment.converted_at, Enrollment.state)
        .where(*where).subquery("cohort")
    )


def _waiting(session: Session, journey_id: str, version: int | None,
             window: Window) -> list[tuple[str, int, datetime | None, datetime | None]]:
    """Per step: the cohort's active enrollments there, the oldest and the median ``updated_at``
    (read from the index of waiting enrollments alone)."""
    where = [Enrollment.journey_id == journey_id, Enrollment.status == "active", Enrollment.step.is_not(None),
             Enrollment.started_at >= window.since, Enrollment.started_at < window.until]
    if version is not None:
        where.append(Enrollment.version == version)
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            select(Enrollment.step, func.count(), func.min(Enrollment.updated_at),
                   func.percentile_disc(0.5).within_group(Enrollment.updated_at))
            .where(*where).group_by(Enrollment.step)
        ).all()
        return [(step, int(n), _aware(oldest), _aware(median)) for step, n, oldest, median in rows]
    # SQLite has no percentiles: the middle row by row_number.
    ranked = (
        select(Enrollment.step, Enrollment.updated_at,
               func.row_number().over(partition_by=Enrollment.step, order_by=Enrollment.updated_at).label("n"),
               func.count().over(partition_by=Enrollment.step).label("total"))
        .where(*where).subquery("ranked")
    )
    out: dict[str, list[Any]] = {}
    for step, total, at, n in session.execute(
        select(ranked.c.step, ranked.c.total, ranked.c.updated_at, ranked.c.n)
        .where(or_(ranked.c.n == 1, ranked.c.n == (ranked.c.total + 1) // 2))
    ):
        entry = out.setdefault(step, [step, int(total), None, None])
        if n == 1:
            entry[2] = _aware(at)
        if n == (int(total) + 1) // 2:
            entry[3] = _aware(at)
    return [tuple(v) for v in out.values()]


def _deliveries(session: Session, journey_id: str, version: int | None, window: Window) -> list[tuple[str, str, int]]:
    """The journey's deliveries written in the window, by step and status (from an index alone)."""
    query = select(Delivery.step, Delivery.status, func.count()).group_by(Delivery.step, Delivery.status)
    return [(step, status, int(n)) for step, status, n in session.execute(_written(query, journey_id, version, window))]


def _held(session: Session, journey_id: str, version: int | None, window: Window) -> list[tuple[str, str | None, int]]:
    """The held ones among them, by step and the policy's reason."""
    query = (select(Delivery.step, Delivery.error, func.count()).where(Delivery.status == "held")
             .group_by(Delivery.step, Delivery.error))
    return [(step, reason, int(n)) for step, reason, n in session.execute(_written(query, journey_id, version, window))]


def _written(query: Any, journey_id: str, version: int | None, window: Window) -> Any:
    """``query`` over the deliveries of ``journey_id`` (one ``version``, or all) written in ``window``."""
    query = query.where(Delivery.journey_id == journey_id, Delivery.created_at >= window.since,
                        Delivery.created_at < window.until)
    return query.where(Delivery.version == version) if version is not None else query


def _choosers(definitions: Mapping[int, Journey]) -> tuple[dict[str, BranchStep], dict[str, SplitStep]]:
    """The branch and split steps of ``definitions`` by id (the newest version's wins)."""
    branches: dict[str, BranchStep] = {}
    splits: dict[str, SplitStep] = {}
    for version in sorted(definitions):
        for step in definitions[version].steps:
            if isinstance(step, BranchStep):
                branches[step.id] = step
            elif isinstance(step, SplitStep):
                splits[step.id] = step
    return branches, splits


def _variant_customers(session: Session, cohort: Any, converted: ColumnElement[int],
                       split_ids: Sequence[str]) -> list[tuple[str, str, int, int]]:
    """``(split, variant, customers, converted customers)``, customers counted once each."""
    rows: list[tuple[str, str, int, int]] = []
    for split_id in split_ids:
        path = cohort.c.state["variant"][split_id].as_string()
        per_customer = (
            select(path.label("variant"), func.max(converted).label("converted"))
            .where(path.is_not(None)).group_by(cohort.c.customer_id, path).subquery("per_customer")
        )
        for variant, customers, conversions in session.execute(
            select(per_customer.c.variant, func.count(), func.sum(per_customer.c.converted))
            .group_by(per_customer.c.variant)
        ):
            rows.append((split_id, variant, int(customers), int(conversions or 0)))
    return rows




def _days(window: Window) -> tuple[date, date]:
    """The first and the last UTC day of a :func:`whole_days` window."""
    return window.since.date(), (window.until - timedelta(days=1)).date()


def whole_days(window: Window) -> Window:
    """``window`` rounded out to whole UTC days: stats count by the day an enrollment started."""
    since = window.since.astimezone(timezone.utc)
    until = window.until.astimezone(timezone.utc)
    start = datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
    end = datetime(until.year, until.month, until.day, tzinfo=timezone.utc)
    if end < until:
        end += timedelta(days=1)
    return Window(start, end)


def _choices(edge_rows: Sequence[Any], variant_rows: Sequence[Any], branches: Mapping[str, BranchStep],
             splits: Mapping[str, SplitStep], steps: dict[str, dict[str, Any]],
             min_sample: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The edges out of branches and splits, and each split's variants compared."""
    taken: dict[tuple[str, str], int] = defaultdict(int)
    for step_id, what, detail, _status, count in edge_rows:
        if what in ("choose", "condition") and (step_id in splits or step_id in branches):
            taken[(step_id, f"{what}:{detail or ''}")] += int(count)
    edges: list[dict[str, Any]] = []
    for (step_id, choice), count in sorted(taken.items()):
        what, _, detail = choice.partition(":")
        reached = steps.get(step_id, {}).get("entered") or 0
        if step_id in splits:
            name = detail.removeprefix(SPLIT_PATH)
            path = next((p for p in splits[step_id].paths if p.name == name), None)
            to = ("holdout" if path.holdout else path.goto) if path is not None else None
        else:
            branch = branches[step_id]
            if what == "choose":
                name, to = "else", branch.next
            else:
                name, to = detail, next((c.goto for c in branch.cases if c.when.source[:counters.DETAIL_LENGTH] == detail), None)
        edges.append({"step": step_id, "path": name, "to": to, "customers": count, "share": _rate(count, reached)})
    groups: dict[str, list[Group]] = defaultdict(list)
    for step_id, name, customers, conversions in variant_rows:
        holdout = next((p for p in splits[step_id].paths if p.holdout), None)
        path = holdout if name == "control" and holdout is not None else next(
            (p for p in splits[step_id].paths if p.name == name), None)
        name = path.name if path is not None else name
        groups[step_id].append(Group(name, int(customers), int(conversions or 0),
                                     holdout=bool(path is not None and path.holdout)))
    variants: list[dict[str, Any]] = []
    for step_id, split in splits.items():
        seen = {g.variant: g for g in groups.get(step_id, [])}
        ordered = [seen.get(p.name) or Group(p.name, 0, 0, holdout=p.holdout) for p in split.paths]
        ordered += [g for name, g in seen.items() if name not in {p.name for p in split.paths}]
        for result in compare(ordered, min_sample=min_sample):
            variants.append({"split": step_id, **result})
    return edges, variants


# -- the statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One variant of a split: its customers and how many of them converted."""

    variant: str
    customers: int
    converted: int
    holdout: bool = False


def control_of(groups: Sequence[Group]) -> int:
    """The index of the control: the holdout, else a path named ``control``, else the first."""
    for index, group in enumerate(groups):
        if group.holdout:
            return index
    for index, group in enumerate(groups):
        if group.variant == "control":
            return index
    return 0


def compare(groups: Sequence[Group], *, min_sample: int = MIN_SAMPLE, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Each variant against the control: rate, lift, the interval of the difference, the p-value.

    The test is statsmodels' two-sided two-proportion z-test with the pooled variance (the
    same p-value as a chi-squared test of the 2x2 table); the interval is Newcombe's
    hybrid score interval for the difference of the rates, which behaves at rates near
    0 or 1 where the Wald interval fails. ``significant`` needs enough data (at least
    ``min_sample`` customers in both groups and :data:`MIN_EXPECTED` conversions and
    non-conversions expected in each) and p below ``alpha``. ``p_beats_control`` is the
    chance that the variant's rate is above the control's under uniform Beta priors.
    """
    if not groups:
        return []
    base = control_of(groups)
    control = groups[base]
    results = []
    for index, group in enumerate(groups):
        row: dict[str, Any] = {
            "variant": group.variant,
            "control": index == base,
            "holdout": group.holdout,
            "customers": group.customers,
            "converted": group.converted,
            "rate": _rate(group.converted, group.customers),
            "lift": None,
            "relative_lift": None,
            "ci95": None,
            "p_value": None,
            "p_beats_control": None,
            "significant": False,
            "enough_data": None,
            "verdict": "control" if index == base else None,
        }
        if index != base:
            row.update(_against(group, control, min_sample, alpha))
        results.append(row)
    return results


def _against(group: Group, control: Group, min_sample: int, alpha: float) -> dict[str, Any]:
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    out: dict[str, Any] = {}
    if group.customers == 0 or control.customers == 0:
        out.update(enough_data=False, verdict=f"not enough data: {min(group.customers, control.customers)} customers, "
                                              f"{min_sample} needed in each group")
        return out
    rate, base = group.converted / group.customers, control.converted / control.customers
    out["lift"] = rate - base
    out["relative_lift"] = (rate - base) / base if base else None
    total = group.customers + control.customers
    pooled = (group.converted + control.converted) / total
    if 0 < pooled < 1:
        _, p_value = proportions_ztest([group.converted, control.converted], [group.customers, control.customers])
        out["p_value"] = float(p_value)
    else:  # nobody (or everybody) converted in both groups: no difference to test
        out["p_value"] = 1.0
    low, high = confint_proportions_2indep(group.converted, group.customers, control.converted, control.customers,
                                           method="newcomb", compare="diff", alpha=alpha)
    out["ci95"] = [float(low), float(high)]
    out["p_beats_control"] = _p_beats(group, control)
    smallest = min(group.customers, control.customers)
    expected = min(n * q for n in (group.customers, control.customers) for q in (pooled, 1 - pooled))
    enough = smallest >= min_sample and expected >= MIN_EXPECTED
    out["enough_data"] = enough
    if not enough:
        why = (f"{smallest} customers, {min_sample} needed in each group" if smallest < min_sample
               else f"too few conversions (or non-conversions) expected: {expected:.1f}, {MIN_EXPECTED} needed")
        out["verdict"] = f"not enough data: {why}"
        return out
    out["significant"] = out["p_value"] < alpha
    if not out["significant"]:
        out["verdict"] = "no significant difference"
    else:
        out["verdict"] = "better than control" if out["lift"] > 0 else "worse than control"
    return out


def _p_beats(group: Group, control: Group) -> float:
    rng = np.random.default_rng(20261201)
    a = rng.beta(1 + group.converted, 1 + group.customers - group.converted, _DRAWS)
    b = rng.beta(1 + control.converted, 1 + control.customers - control.converted, _DRAWS)
    return float(np.mean(a > b))


# -- the stage funnel -----------------------------------------------------------------------


def stage_funnel(session: Session, window: Window, now: datetime) -> dict[str, Any]:
    """Customers in each stage now, moves between stages in ``window``, time in stage, drop-off.

    A stay in a stage starts with a move into it and ends with the customer's next move.
    ``entered`` counts moves into the stage in the window; ``advanced`` those of them whose
    next move (so far) went to a later stage; ``drop_off`` is the rest's share. The median
    time in stage is over the stays that ended in the window.
    """
    current = dict(session.execute(
        select(Customer.stage, func.count()).where(Customer.merged_into_id.is_(None)).group_by(Customer.stage)
    ).all())
    changes = StageChange.__table__.c
    in_window = and_(changes.at >= window.since, changes.at < window.until)
    transitions = [
        {"from": f, "to": t, "customers": int(n)}
        for f, t, n in session.execute(
            select(changes.from_stage, changes.to_stage, func.count()).where(in_window)
            .group_by(changes.from_stage, changes.to_stage).order_by(changes.from_stage, changes.to_stage)
        )
    ]
    order = case({s: i for i, s in enumerate(STAGES)}, value=changes.to_stage, else_=-1)
    stays = select(
        changes.to_stage.label("stage"), changes.at.label("at"), order.label("rank"),
        func.lead(changes.at).over(partition_by=changes.customer_id, order_by=(changes.at, changes.id)).label("left_at"),
        func.lead(order).over(partition_by=changes.customer_id, order_by=(changes.at, changes.id)).label("next_rank"),
    ).subquery("stays")
    entered_in = and_(stays.c.at >= window.since, stays.c.at < window.until)
    flows = {
        stage: (int(entered), int(moved), int(advanced))
        for stage, entered, moved, advanced in session.execute(
            select(stays.c.stage, func.count(), func.count(stays.c.left_at),
                   func.coalesce(func.sum(case((stays.c.next_rank > stays.c.rank, 1), else_=0)), 0))
            .where(entered_in).group_by(stays.c.stage)
        )
    }
    duration = _seconds_between(session, stays.c.at, stays.c.left_at)
    ended = (
        select(stays.c.stage, duration.label("seconds"),
               func.row_number().over(partition_by=stays.c.stage, order_by=duration).label("n"),
               func.count().over(partition_by=stays.c.stage).label("total"))
        .where(stays.c.left_at.is_not(None), stays.c.left_at >= window.since, stays.c.left_at < window.until)
        .subquery("ended")
    )
    medians: dict[str, list[float]] = defaultdict(list)
    for stage, seconds, n, total in session.execute(
        select(ended.c.stage, ended.c.seconds, ended.c.n, ended.c.total)
        .where(or_(ended.c.n == (ended.c.total + 1) // 2, ended.c.n == ended.c.total // 2 + 1))
    ):
        if n in ((total + 1) // 2, total // 2 + 1):
            medians[stage].append(round(float(seconds), 3))  # julianday arithmetic on SQLite is not exact
    stages = []
    for stage in STAGES:
        entered, moved, advanced = flows.get(stage, (0, 0, 0))
        middle = medians.get(stage)
        stages.append({
            "stage": stage,
            "customers": int(current.get(stage, 0)),
            "entered": entered,
            "moved_on": moved,
            "advanced": advanced,
            "drop_off": _rate(entered - advanced, entered),
            "median_seconds_in_stage": sum(middle) / len(middle) if middle else None,
        })
    return {
        "since": window.since.isoformat(),
        "until": window.until.isoformat(),
        "stages": stages,
        "no_stage": int(current.get(None, 0)),
        "transitions": transitions,
    }


def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


# -- the metrics ----------------------------------------------------------------------------


def variant_counts(session: Session) -> list[tuple[str, str, str, str, int]]:
    """Enrollments by journey, split, variant (the path's name) and status, for ``/metrics``:
    from the counts, those that took each path, less those of them that ended, are active."""
    table = JourneyCount.__table__.c
    took: dict[tuple[str, str, str], int] = defaultdict(int)
    ended: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for journey_id, step, what, detail, value, n in session.execute(
        select(table.journey_id, table.step, table.what, table.detail, table.value, func.sum(table.count))
        .where(or_(and_(table.what == "choose", table.detail.like(SPLIT_PATH + "%")), table.what == "ended"))
        .group_by(table.journey_id, table.step, table.what, table.detail, table.value)
    ):
        if what == "choose":
            took[(journey_id, step, detail.removeprefix(SPLIT_PATH))] += int(n)
        else:
            for split_id, path in counters.read_variants(value).items():
                ended[(journey_id, split_id, path, detail)] += int(n)
    gone: dict[tuple[str, str, str], int] = defaultdict(int)
    for (journey_id, split_id, path, _status), n in ended.items():
        gone[(journey_id, split_id, path)] += n
    rows = [(journey_id, split_id, path, status, n) for (journey_id, split_id, path, status), n in ended.items()]
    rows += [(*took_key, "active", n - gone[took_key]) for took_key, n in took.items() if n - gone[took_key]]
    return sorted(rows)


# -- helpers --------------------------------------------------------------------------------


def held_kind(reason: str | None) -> str:
    """The kind of a policy's hold reason, without the details (``frequency cap``, ``suppressed``...)."""
    text = (reason or "unknown").strip()
    if text.startswith("unsubscribed"):
        return "unsubscribed"
    if text.endswith(": dropped"):
        return "quiet hours"
    return text.split(":", 1)[0] or "unknown"


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _seconds(now: datetime, at: datetime | None) -> float | None:
    return max(0.0, (now - at).total_seconds()) if at is not None else None


def _aware(at: Any) -> datetime | None:
    if at is None:
        return None
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value

