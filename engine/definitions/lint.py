"""Warnings about journeys that load but probably do not do what their author meant."""

from __future__ import annotations

from engine.definitions import model
from engine.errors import Problem


def lint(journey: model.Journey) -> list[Problem]:
    """Every warning for a loaded journey, located in its file.

    Rules: unreachable steps; a loop with no wait in it; a ``wait_until`` without a
    timeout; a marketing send (by its own ``kind``, else the journey's) in a journey with
    no goal; the trigger event doubling as the goal event; a condition that can never hold
    (a constant false, or a branch case that repeats an earlier one).
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


def _never_true(journey: model.Journey, at: object) -> None:
    conditions = []
    if journey.trigger.when is not None:
        conditions.append(("trigger.when", journey.trigger.when))
    for i, step in enumerate(journey.steps):
        if isinstance(step, model.WaitUntilStep) and step.when is not None:
            conditions.append((f"steps[{i}].wait_until.when", step.when))
        if isinstance(step, model.BranchStep):
            earlier: set[str] = set()
            for c, case in enumerate(step.cases):
                path = f"steps[{i}].branch[{c}].when"
                if case.when.source.strip() in earlier:
                    at(path, f'"{case.when.source}" repeats an earlier case of this branch, so it never picks this path')  # type: ignore[operator]
                earlier.add(case.when.source.strip())
                conditions.append((path, case.when))
    for path, condition in conditions:
        if not condition.references_variables and not condition.evaluate({}).value:
            at(path, f'"{condition.source}" is always false, so it can never hold')  # type: ignore[operator]
