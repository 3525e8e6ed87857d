"""Draw a journey as a Mermaid flowchart, one box per lifecycle stage."""

from __future__ import annotations

from engine.definitions import model
from engine.durations import format_duration


def mermaid(journey: model.Journey) -> str:
    """A Mermaid ``flowchart TD`` of the journey: steps grouped by the stage the customer is in."""
    stages = _stages(journey)
    lines = ["flowchart TD", f'    start(["{_text(_trigger(journey))}"])']
    for stage in dict.fromkeys(stages.values()):
        lines.append(f"    subgraph stage_{stage}[{stage}]")
        lines.extend(f"        {_node(step)}" for step in journey.steps if stages.get(step.id) == stage)
        lines.append("    end")
    unreached = [s for s in journey.steps if s.id not in stages]
    lines.extend(f"    {_node(step)}" for step in unreached)
    lines.append('    finish(["end"])')
    lines.append(f"    start --> {_id(journey.first.id)}")
    for step in journey.steps:
        for label, target in _edges(step):
            arrow = f'-->|"{_text(label)}"|' if label else "-->"
            lines.append(f"    {_id(step.id)} {arrow} {_id(target)}")
    for name, outcome in [("goal", journey.goal), *[("exit", o) for o in journey.exit_on]]:
        if outcome is not None:
            node = f"{name}_{outcome.event}"
            lines.append(f'    {node}{{{{"{name}: {_text(outcome.event)}"}}}} -.-> {_id(outcome.goto)}')
    return "\n".join(lines) + "\n"


def _trigger(journey: model.Journey) -> str:
    trigger = journey.trigger
    head = f"on {trigger.event}" if trigger.event else f"enters segment {trigger.segment}"
    return f"{head} when {trigger.when.source}" if trigger.when else head


def _stages(journey: model.Journey) -> dict[str, str]:
    """The stage the customer is in at each reachable step (the first path found wins)."""
    stages: dict[str, str] = {}
    todo = [(journey.first.id, journey.stage)]
    while todo:
        step_id, stage = todo.pop(0)
        if step_id in stages:
            continue
        step = journey.step(step_id)
        stage = step.stage or (step.set_stage if isinstance(step, model.UpdateStep) and step.set_stage else stage)
        stages[step_id] = stage
        todo.extend((t, stage) for t in step.targets() if t is not None)
    return stages


def _id(step_id: str | None) -> str:
    """A node id: prefixed, since a step may be called like a Mermaid keyword (graph, end)."""
    return f"s_{step_id}" if step_id else "finish"


def _node(step: model.Step) -> str:
    label = _text(f"{step.id}: {_summary(step)}")
    if isinstance(step, (model.BranchStep, model.SplitStep)):
        return f'{_id(step.id)}{{"{label}"}}'
    if isinstance(step, (model.WaitStep, model.WaitUntilStep)):
        return f'{_id(step.id)}(["{label}"])'
    return f'{_id(step.id)}["{label}"]'


def _summary(step: model.Step) -> str:
    if isinstance(step, model.SendStep):
        what = f"{step.action} {step.audience}" if step.audience else (step.template or "inline")
        return f"send {step.channel} {what}"
    if isinstance(step, model.WaitStep):
        parts = [format_duration(step.duration)] if step.duration else []
        parts += [f"until {step.until:%H:%M}"] if step.until else []
        return "wait " + " then ".join(parts)
    if isinstance(step, model.WaitUntilStep):
        timeout = f" up to {format_duration(step.timeout)}" if step.timeout else ""
        return f"wait for {step.event}{timeout}"
    if isinstance(step, model.RewardStep):
        points = step.points.source if hasattr(step.points, "source") else step.points
        return f"reward {points} points to {step.to}"
    if isinstance(step, model.UpdateStep):
        return "update " + ", ".join([*step.traits, *([f"stage {step.set_stage}"] if step.set_stage else [])])
    if isinstance(step, model.ReferralStep):
        return f"referral code ({step.program})"
    if isinstance(step, model.ExitStep):
        return "exit (conversion)" if step.conversion else "exit"
    return step.kind


def _edges(step: model.Step) -> list[tuple[str, str | None]]:
    if isinstance(step, model.BranchStep):
        return [(case.when.source, case.goto) for case in step.cases] + [("else", step.next)]
    if isinstance(step, model.SplitStep):
        return [(f"{path.name} {path.weight:g}%", path.goto) for path in step.paths]
    if isinstance(step, model.WaitUntilStep):
        edges: list[tuple[str, str | None]] = [(step.event, step.on_event)]
        return edges + ([("timeout", step.on_timeout)] if step.timeout else [])
    if isinstance(step, model.ExitStep):
        return []
    return [("", step.next)]


def _text(text: str) -> str:
    """Escape what Mermaid would read as syntax inside a quoted label."""
    return text.replace('"', "#quot;").replace("|", "#124;")
