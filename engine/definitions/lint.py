"""Warnings about journeys that load but probably do not do what their author meant."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from engine.definitions import model
from engine.definitions.sample import CUSTOMER_FIELDS, SAMPLE_TIME, sample_context, sample_customer, sample_event
from engine.errors import Problem, TemplateError
from engine.rules import Expression, FieldReference, field_references

_COMPARED = re.compile(r"""\s*(==|!=|<=|>=|<|>|in\b)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[\w.]+|\[[^\[\]]*\])""")


def lint(journey: model.Journey) -> list[Problem]:
    """Every warning for a loaded journey, located in its file.

    Rules: unreachable steps; a loop with no wait in it; a ``wait_until`` without a
    timeout; a marketing send (by its own ``kind``, else the journey's) in a journey with
    no goal; the trigger event doubling as the goal event; a condition that can never hold
    (a constant false, or a branch case that repeats an earlier one); a condition that reads
    a trait or property the customer or event may lack, without ``has()`` (see
    :func:`_unguarded`); a template that fails to render for a customer without a trait.
    """
    warnings: list[Problem] = []
    index = {step.id: i for i, step in enumerate(journey.steps)}

    def at(path: str, message: str) -> None:
        line, column = journey.locations.get(path, (None, None))
        warnings.append(Problem(path, message, line, column))

    reachable = _reachable(journey)
    for i, step in enumerate(journey.steps):
        if step.id not in reachable:
            at(f"steps[{i}]", f"step '{step.id}' is unreachable: no step leads to it; remove it or add a goto")
    for cycle in _loops_without_wait(journey):
        i = index[cycle[0]]
        path = " -> ".join([*cycle, cycle[0]])
        at(f"steps[{i}]", f"loop with no wait in it ({path}) would run without pause; add a wait step to it")
    for i, step in enumerate(journey.steps):
        if isinstance(step, model.WaitUntilStep) and step.timeout is None:
            at(f"steps[{i}].wait_until", f"wait_until '{step.event}' has no timeout; customers who never send it wait forever")
    marketing = [i for i, s in enumerate(journey.steps) if isinstance(s, model.SendStep) and journey.send_kind(s) == "marketing"]
    if marketing and journey.goal is None:
        at(f"steps[{marketing[0]}]", "marketing sends in a journey with no goal: add a goal event to measure conversions")
    if journey.goal is not None and journey.trigger.event == journey.goal.event:
        at("goal.event", f"the goal event '{journey.goal.event}' is also the trigger event, so every enrollment converts at once")
    _never_true(journey, at)
    _unguarded(journey, at)
    _templates_need_traits(journey, at)
    return sorted(warnings, key=lambda p: (p.line or 0, p.column or 0))


def _reachable(journey: model.Journey) -> set[str]:
    starts = [journey.first.id] + [o.goto for o in (journey.goal, *journey.exit_on) if o is not None and o.goto]
    seen: set[str] = set()
    todo = [s for s in starts if s]
    while todo:
        step_id = todo.pop()
        if step_id in seen:
            continue
        seen.add(step_id)
        todo.extend(t for t in journey.step(step_id).targets() if t is not None)
    return seen


def _loops_without_wait(journey: model.Journey) -> list[list[str]]:
    """Cycles made only of steps that do not wait, each reported once."""
    pausing = (model.WaitStep, model.WaitUntilStep)
    found: list[list[str]] = []
    covered: set[str] = set()
    for start in journey.steps:
        if isinstance(start, pausing) or start.id in covered:
            continue
        stack: list[tuple[str, list[str]]] = [(start.id, [start.id])]
        visited: set[str] = set()
        while stack:
            step_id, trail = stack.pop()
            for target in journey.step(step_id).targets():
                if target is None or isinstance(journey.step(target), pausing):
                    continue
                if target == start.id:
                    found.append(trail)
                    covered.update(trail)
                    stack.clear()
                    break
                if target not in visited:
                    visited.add(target)
                    stack.append((target, [*trail, target]))
    return found


def _conditions(journey: model.Journey) -> Iterator[tuple[str, Expression, model.Step | None]]:
    """Every condition and expression of the journey: its path, itself, and its step if any."""
    if journey.trigger.when is not None:
        yield "trigger.when", journey.trigger.when, None
    for where, outcome in [("goal", journey.goal), *((f"exit_on[{i}]", o) for i, o in enumerate(journey.exit_on))]:
        if outcome is not None and outcome.when is not None:
            yield f"{where}.when", outcome.when, None
    for i, step in enumerate(journey.steps):
        if isinstance(step, model.WaitUntilStep) and step.when is not None:
            yield f"steps[{i}].wait_until.when", step.when, step
        if isinstance(step, model.BranchStep):
            for c, case in enumerate(step.cases):
                yield f"steps[{i}].branch[{c}].when", case.when, step
        if isinstance(step, model.RewardStep) and isinstance(step.points, Expression):
            yield f"steps[{i}].reward.points", step.points, step


def _never_true(journey: model.Journey, at: Callable[[str, str], None]) -> None:
    for i, step in enumerate(journey.steps):
        if isinstance(step, model.BranchStep):
            earlier: set[str] = set()
            for c, case in enumerate(step.cases):
                if case.when.source.strip() in earlier:
                    at(f"steps[{i}].branch[{c}].when", f'"{case.when.source}" repeats an earlier case of this branch, so it never picks this path')
                earlier.add(case.when.source.strip())
    for path, condition, _ in _conditions(journey):
        if path.endswith(".when") and not condition.references_variables and not condition.evaluate({}).value:
            at(path, f'"{condition.source}" is always false, so it can never hold')


def _unguarded(journey: model.Journey, at: Callable[[str, str], None]) -> None:
    """Warn where a condition reads a field that may be missing at run time, without ``has()``.

    A missing key makes the whole condition fail, which counts as false (or gives no points):
    ``customer.tier != "gold"`` is false for a customer with no tier. Guaranteed are the fields
    every customer has (:data:`CUSTOMER_FIELDS`), the traits that an ``update`` or ``referral``
    step sets on every path to the condition, and the event properties in the sample, unless
    the sample gives ``null`` (the app may leave it out). Any other trait may be missing: a
    new customer has only the traits the app sent. A ``has()`` of the same field anywhere in
    the expression guards it: CEL's ``&&`` and ``||`` absorb an error on either side.
    """
    set_before = _traits_set_before(journey)
    events: Mapping[str, Any] = journey.sample.get("events") or {}
    for path, expression, step in _conditions(journey):
        refs = field_references(expression.source)
        guarded = {r.name for r in refs if r.tested}
        warned: set[str] = set()
        for ref in refs:
            if ref.tested:
                continue
            field, why = _may_be_missing(ref, set_before.get(step.id, set()) if step else set(), events)
            if field is None or field in guarded or field in warned:
                continue
            warned.add(field)
            guard = _guard(expression.source, ref, field)
            at(path, f'"{expression.source}" reads {field}, {why}; then the condition fails and counts as false. {guard}')


def _may_be_missing(ref: FieldReference, traits_set: set[str], events: Mapping[str, Any]) -> tuple[str | None, str]:
    """The field of ``ref`` that may be missing at run time (``customer.tier``), and why."""
    if ref.variable == "customer":
        trait = ref.fields[0]
        if trait in CUSTOMER_FIELDS or trait in traits_set:
            return None, ""
        return f"customer.{trait}", "which a customer may not have (a new one has only the traits the app sent)"
    if ref.variable in ("event", "trigger") and len(ref.fields) >= 2 and ref.fields[0] == "properties":
        name = ref.fields[1]
        if any(isinstance(e, Mapping) and name in (e.get("properties") or {}) and e["properties"][name] is None for e in events.values()):
            return f"{ref.variable}.properties.{name}", "which the sample gives as null (the event may come without it)"
    return None, ""


def _guard(source: str, ref: FieldReference, field: str) -> str:
    """The fix, e.g. ``write !has(customer.tier) || customer.tier != "gold"``."""
    compared = _COMPARED.match(source, ref.end) if ref.name == field else None
    if compared is None:
        return f"Test it first: has({field}) && ..., or !has({field}) || ... to let those without it through"
    comparison = source[ref.start : compared.end()]
    if compared.group(1) == "!=":
        return f"Write (!has({field}) || {comparison}) to let those without it through"
    return f"Write (has({field}) && {comparison}), or (!has({field}) || {comparison}) to let those without it through"


def _traits_set_before(journey: model.Journey) -> dict[str, set[str]]:
    """For each step, the traits that an ``update`` or ``referral`` step set on every path to it."""

    def sets(step: model.Step) -> set[str]:
        if isinstance(step, model.UpdateStep):
            return set(step.traits)
        if isinstance(step, model.ReferralStep):
            return {step.store_as}
        return set()

    every = set().union(*(sets(s) for s in journey.steps))
    starts = {journey.first.id} | {o.goto for o in (journey.goal, *journey.exit_on) if o is not None and o.goto}
    before = {s.id: set() if s.id in starts else set(every) for s in journey.steps}
    changed = True
    while changed:
        changed = False
        for step in journey.steps:
            after = before[step.id] | sets(step)
            for target in step.targets():
                if target is not None and not before[target] <= after:
                    before[target] &= after
                    changed = True
    return before


def _templates_need_traits(journey: model.Journey, at: Callable[[str, str], None]) -> None:
    """Warn where a send's template fails to render for a customer who lacks a trait that the
    sample has but nothing guarantees (see :func:`_unguarded`): that customer gets no message."""
    set_before = _traits_set_before(journey)
    sample = journey.sample
    given: dict[str, Any] = {}
    for step in journey.steps:
        if isinstance(step, model.UpdateStep):
            given.update({k: v for k, v in step.traits.items() if k not in given})
        if isinstance(step, model.ReferralStep):
            given.setdefault(step.store_as, "SAMPLE-CODE")
    customer = sample_customer(sample.get("customer") or {}, journey.stage, given)
    events = [sample_event(name, sample.get("events") or {}, customer["id"]) for name in _event_names(journey)]
    trigger = events[0] if journey.trigger.event else {}
    for i, step in enumerate(journey.steps):
        if not isinstance(step, model.SendStep) or not step.parts:
            continue
        context = {"trigger": trigger, "context": sample_context(journey.id, journey.name, journey.stage, step.id), "now": SAMPLE_TIME}
        # The event current at a send may be the trigger or one a wait_until received: take
        # one the template renders with, so that only the customer's traits are in question.
        fits = [e for e in events or [{}] if _renders(step, {**context, "customer": customer, "event": e})]
        if not fits:
            continue
        context["event"] = fits[0]
        optional = [t for t in customer if t not in CUSTOMER_FIELDS and t not in set_before[step.id]]
        for trait in optional:
            without = {k: v for k, v in customer.items() if k != trait}
            if not _renders(step, {**context, "customer": without}):
                name = f"template {step.template}" if step.template else "the message"
                at(
                    f"steps[{i}].send",
                    f"{name} fails to render for a customer without {trait} (a new one has only the traits"
                    f" the app sent), so they get no message; write {{{{ customer.{trait} | default(\"...\") }}}}"
                    f" or {{% if customer.{trait} is defined %}}...{{% endif %}}",
                )


def _renders(step: model.SendStep, context: Mapping[str, Any]) -> bool:
    try:
        step.render(context)
    except TemplateError:
        return False
    return True


def _event_names(journey: model.Journey) -> list[str]:
    """The journey's events, the trigger's first."""
    names = [journey.trigger.event] if journey.trigger.event else []
    names += [o.event for o in (journey.goal, *journey.exit_on) if o is not None]
    names += [s.event for s in journey.steps if isinstance(s, model.WaitUntilStep)]
    return list(dict.fromkeys(names))
