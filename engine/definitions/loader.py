"""Load journey files: parse, check everything, report every problem at once, build the model.

``load_journey(path)`` returns a :class:`~engine.definitions.model.Journey` or raises
:class:`~engine.errors.DefinitionError` listing every problem with its line and column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from engine.definitions import document as doc
from engine.definitions import model
from engine.definitions.catalog import CHANNEL_PARTS, CHANNELS
from engine.definitions.comparisons import explain as explain_mismatch
from engine.definitions.sample import sample_context, sample_customer, sample_event
from engine.definitions.source import Path as DocPath
from engine.definitions.source import Source, format_path, read_yaml
from engine.definitions.translate import translate
from engine.durations import parse_duration
from engine.errors import DefinitionError, Problem, TemplateError, did_you_mean
from engine.rules import (
    CelCompileError,
    Expression,
    compile_condition,
    compile_expression,
    field_references,
    mismatched_comparisons,
)
from engine.settings import FrequencyCap
from engine.templates import TemplateEngine, TemplateStore, TemplateSyntaxProblem, UndefinedVariable
from engine.templates.store import PARTS, SUFFIX

JOURNEY_SUFFIXES = (".yaml", ".yml")
_ENGINE = TemplateEngine()
_NEEDS = "a journey needs id, name, stage, trigger and steps"


def load_journey(path: str | Path, *, engine: TemplateEngine | None = None) -> model.Journey:
    """Load and check one journey file; its templates are in ``templates/`` beside it.

    Raises:
        DefinitionError: the file is invalid; ``problems`` lists every problem found.
    """
    path = Path(path)
    if path.is_dir():
        files = journey_files([path])
        example = f", such as {files[0]}" if files else ""
        message = f"{path} is a directory, not a journey file; give one of its journey files{example}"
        raise DefinitionError(str(path), [Problem("", message)])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(str(path), [Problem("", f"cannot read the file: {exc}")]) from None
    return load_text(text, filename=str(path), templates=path.parent / "templates", engine=engine, path=path)


def load_text(
    text: str,
    *,
    filename: str = "<journey>",
    templates: Path | None = None,
    engine: TemplateEngine | None = None,
    path: Path | None = None,
    templates_shown_as: str | None = None,
) -> model.Journey:
    """Load and check a journey from YAML text (see :func:`load_journey`).

    ``templates_shown_as`` names the templates' directory in messages when ``templates``
    is a private copy (a deployed version's), e.g. ``cart_abandonment v2 templates``.
    """
    store = TemplateStore(templates or Path("templates"), shown_as=templates_shown_as)
    checker = _Checker(read_yaml(text), store, engine or _ENGINE)
    journey = checker.run(path)
    if checker.problems or journey is None:
        raise DefinitionError(filename, _ordered(checker.problems))
    return journey


@dataclass
class LoadResult:
    """The journeys that loaded, and an error for each file that did not."""

    journeys: dict[str, model.Journey] = field(default_factory=dict)
    errors: list[DefinitionError] = field(default_factory=list)


def journey_files(paths: Iterable[str | Path]) -> list[Path]:
    """The journey files named, directories expanded to their ``*.yaml``/``*.yml`` files."""
    found: list[Path] = []
    for item in paths:
        item = Path(item)
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.suffix in JOURNEY_SUFFIXES and p.is_file()))
        else:
            found.append(item)
    return found


def load_journeys(paths: Iterable[str | Path], *, engine: TemplateEngine | None = None) -> LoadResult:
    """Load every journey file under ``paths`` (files or directories), collecting errors per file.

    Two files with the same journey id are an error in the second.
    """
    result = LoadResult()
    where: dict[str, Path] = {}
    for path in journey_files(paths):
        try:
            journey = load_journey(path, engine=engine)
        except DefinitionError as exc:
            result.errors.append(exc)
            continue
        if journey.id in result.journeys:
            line, column = journey.locations.get("id", (None, None))
            message = f"journey id '{journey.id}' is already used by {where[journey.id]}; ids must be unique"
            result.errors.append(DefinitionError(str(path), [Problem("id", message, line, column)]))
            continue
        result.journeys[journey.id] = journey
        where[journey.id] = path
    return result


def _ordered(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line if p.line is not None else 0, p.column or 0))


@cache
def _adapter(name: str) -> TypeAdapter[Any]:
    info = doc.JourneyDocument.model_fields[name]
    annotation: Any = info.annotation
    if info.metadata:
        from typing import Annotated

        annotation = Annotated[(annotation, *info.metadata)]
    return TypeAdapter(annotation)


_STEP = TypeAdapter(doc.Step)


class _Checker:
    """Checks one document; ``problems`` grows as it goes, and ``run`` builds the journey."""

    def __init__(self, source: Source, store: TemplateStore, engine: TemplateEngine) -> None:
        self.source = source
        self.store = store
        self.engine = engine
        self.problems: list[Problem] = list(source.problems)
        self.compiled: dict[DocPath, Expression] = {}
        self.rendered: dict[DocPath, dict[str, Any]] = {}

    def add(self, path: DocPath, message: str, **where: Any) -> None:
        self.problems.append(self.source.problem(path, message, **where))

    # -- structure -------------------------------------------------------------------------

    def run(self, path: Path | None) -> model.Journey | None:
        data = self.source.data
        if data is None:
            if not self.problems:
                self.add((), f"the file is empty; {_NEEDS}")
            return None
        if not isinstance(data, dict):
            self.add((), f"a journey file is a mapping (key: value lines); {_NEEDS}")
            return None
        document: doc.JourneyDocument | None = None
        try:
            document = doc.JourneyDocument.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(translate(exc.errors(), self.source))
        parts = self._parts(data, document)
        self._check_meaning(data, parts)
        if document is None or self.problems:
            return None
        return self._build(document, path)

    def _parts(self, data: dict[str, Any], document: doc.JourneyDocument | None) -> dict[str, Any]:
        """The top-level values that are valid on their own, so meaning is checked even when
        another part of the file is broken (every problem is reported in one go)."""
        parts: dict[str, Any] = {}
        for name in ("id", "name", "stage", "trigger", "goal", "exit_on", "sample", "policy"):
            if document is not None:
                parts[name] = getattr(document, name)
                continue
            info = doc.JourneyDocument.model_fields[name]
            if name not in data:
                parts[name] = None if info.is_required() else info.get_default(call_default_factory=True)
                continue
            try:
                parts[name] = _adapter(name).validate_python(data[name])
            except ValidationError:
                parts[name] = None
        given = data.get("steps")
        raw_steps = given if isinstance(given, list) else []
        steps: list[Any] = []
        for raw in raw_steps:
            try:
                steps.append(_STEP.validate_python(raw))
            except ValidationError:
                steps.append(None)
        parts["steps"] = steps
        parts["raw_steps"] = raw_steps
        return parts

    # -- meaning ---------------------------------------------------------------------------

    def _check_meaning(self, data: dict[str, Any], parts: dict[str, Any]) -> None:
        raw_steps: list[Any] = parts["raw_steps"]
        steps: list[Any] = parts["steps"]
        ids = self._check_ids(raw_steps)
        self.ids = ids
        self._check_targets(parts)
        stage = parts["stage"] or "awareness"
        sample: doc.Sample = parts["sample"] or doc.Sample()
        extra = {s.referral.store_as: "SAMPLE-CODE" for s in steps if isinstance(s, doc.ReferralStep)}
        for s in steps:
            if isinstance(s, doc.UpdateStep) and s.update.traits:
                extra.update({k: v for k, v in s.update.traits.items() if k not in extra})
        customer = sample_customer(sample.customer, stage, extra)
        events = {name: sample_event(name, sample.events, customer["id"]) for name in self._event_names(parts)}
        self.events = events
        trigger = parts["trigger"]
        trigger_event = events[trigger.event] if isinstance(trigger, doc.EventTrigger) else {}  # _event_names has it
        self.variables = {"customer": [customer], "trigger": [trigger_event]}
        self.journey_info = (parts["id"] or "journey", parts["name"] or "", stage)

        if trigger is not None and trigger.when:
            candidates = [trigger_event] if isinstance(trigger, doc.EventTrigger) else []
            self._condition(("trigger", "when"), trigger.when, candidates, None)
        outcomes = [("goal",), *[("exit_on", i) for i in range(len(parts["exit_on"] or []))]]
        for where, outcome in zip(outcomes, [parts["goal"], *(parts["exit_on"] or [])], strict=True):
            if outcome is not None and outcome.when:
                self._condition((*where, "when"), outcome.when, [events[outcome.event]], None)

        flow = self._event_flow(parts, events)
        for index, step in enumerate(steps):
            if step is None:
                continue
            at: DocPath = ("steps", index)
            seen = [events[name] for name in sorted(flow.get(index, ()))] or [trigger_event]
            self._check_step(at, step, seen)

    def _event_names(self, parts: dict[str, Any]) -> set[str]:
        names: set[str] = set()
        trigger = parts["trigger"]
        if isinstance(trigger, doc.EventTrigger):
            names.add(trigger.event)
        for outcome in [parts["goal"], *(parts["exit_on"] or [])]:
            if outcome is not None:
                names.add(outcome.event)
        names.update(s.wait_until.event for s in parts["steps"] if isinstance(s, doc.WaitUntilStep))
        return names

    def _check_ids(self, raw_steps: list[Any]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for index, raw in enumerate(raw_steps):
            step_id = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(step_id, str):
                continue
            if step_id == doc.END:
                self.add(("steps", index, "id"), "'end' is reserved (goto: end ends the journey); rename the step")
            elif step_id in ids:
                first = ids[step_id]
                line = self.source.mark(("steps", first, "id"))
                where = f" (first at steps[{first}], line {line.line})" if line else ""
                self.add(("steps", index, "id"), f"duplicate step id '{step_id}'{where}; step ids must be unique")
            else:
                ids[step_id] = index
        return ids

    def _check_targets(self, parts: dict[str, Any]) -> None:
        for at, target in self._references(parts):
            if target != doc.END and target not in self.ids:
                hint = did_you_mean(target, list(self.ids))
                known = ", ".join([*self.ids, doc.END])
                self.add(at, f"goto to nowhere: no step '{target}'.{hint} (steps: {known})".replace(". (", " ("))

    def _references(self, parts: dict[str, Any]) -> list[tuple[DocPath, str]]:
        refs: list[tuple[DocPath, str]] = []
        if parts["goal"] is not None and parts["goal"].goto:
            refs.append((("goal", "goto"), parts["goal"].goto))
        for i, outcome in enumerate(parts["exit_on"] or []):
            if outcome.goto:
                refs.append((("exit_on", i, "goto"), outcome.goto))
        for index, step in enumerate(parts["steps"]):
            at: DocPath = ("steps", index)
            for key in ("goto", "on_event", "on_timeout"):
                if getattr(step, key, None):
                    refs.append(((*at, key), getattr(step, key)))
            if isinstance(step, doc.BranchStep):
                for i, item in enumerate(step.branch):
                    key, ref = ("goto", item.goto) if isinstance(item, doc.BranchCase) else ("else", item.else_)
                    refs.append(((*at, "branch", i, key), ref))
            if isinstance(step, doc.SplitStep):
                for i, path in enumerate(step.split):
                    if isinstance(path, doc.SplitPath) and path.goto:
                        refs.append(((*at, "split", i, "goto"), path.goto))
        return refs

    def _event_flow(self, parts: dict[str, Any], events: dict[str, Any]) -> dict[int, set[str]]:
        """Which events may be the current ``event`` at each step (the trigger, or what a
        ``wait_until`` received on the way)."""
        steps = parts["steps"]
        trigger = parts["trigger"]
        start = {trigger.event} if isinstance(trigger, doc.EventTrigger) else set()
        flow: dict[int, set[str]] = {0: set(start)} if steps else {}
        if parts["goal"] is not None and parts["goal"].goto in self.ids:
            flow.setdefault(self.ids[parts["goal"].goto], set()).add(parts["goal"].event)
        for outcome in parts["exit_on"] or []:
            if outcome.goto in self.ids:
                flow.setdefault(self.ids[outcome.goto], set()).add(outcome.event)
        changed = True
        while changed:
            changed = False
            for index, step in enumerate(steps):
                here = flow.get(index, set())
                for target, arriving in _edges(step, index, steps, self.ids, here):
                    known = flow.setdefault(target, set())
                    if not arriving <= known:
                        known |= arriving
                        changed = True
        return flow

    def _check_step(self, at: DocPath, step: Any, seen: list[dict[str, Any]]) -> None:
        if isinstance(step, doc.SendStep):
            self._check_send((*at, "send"), step, seen)
        elif isinstance(step, doc.WaitUntilStep) and step.wait_until.when:
            awaited = [self.events[step.wait_until.event]]
            self._condition((*at, "wait_until", "when"), step.wait_until.when, awaited, step.id)
        elif isinstance(step, doc.BranchStep):
            for i, item in enumerate(step.branch):
                if isinstance(item, doc.BranchCase):
                    self._condition((*at, "branch", i, "when"), item.when, seen, step.id)
                elif i != len(step.branch) - 1:
                    self.add((*at, "branch", i), "'else' must be the last item of a branch; the items after it never run")
        elif isinstance(step, doc.SplitStep):
            self._check_split(at, step)
        elif isinstance(step, doc.RewardStep) and isinstance(step.reward.points, str):
            self._condition((*at, "reward", "points"), step.reward.points, seen, step.id, condition=False)

    def _check_split(self, at: DocPath, step: doc.SplitStep) -> None:
        weights = [p.weight if isinstance(p, doc.SplitPath) else p.holdout for p in step.split]
        total = sum(weights)
        if abs(total - 100) > 1e-9:
            shown = ", ".join(_number(w) for w in weights)
            self.add((*at, "split"), f"split weights add up to {_number(total)}, not 100 ({shown}); make them total 100")
        if sum(isinstance(p, doc.HoldoutPath) for p in step.split) > 1:
            self.add((*at, "split"), "a split has at most one holdout path")

    # -- conditions ------------------------------------------------------------------------

    def _condition(
        self, at: DocPath, source: str, events: list[dict[str, Any]], step_id: str | None, *, condition: bool = True
    ) -> None:
        try:
            compiled = compile_condition(source) if condition else compile_expression(source)
        except CelCompileError as exc:
            for issue in exc.issues:
                offset = issue.column - 1 if issue.line == 1 else None
                self.add(at, f'{issue.message} in "{source}"{issue.hint}', offset=offset)
            return
        if not condition and compiled.result_type not in ("int", "double", "dyn", "uint"):
            self.add(at, f"points must be a number, but the expression {source} gives {compiled.result_type}")
            return
        self.compiled[at] = compiled
        journey_id, name, stage = self.journey_info
        variables: dict[str, list[Any]] = {
            **self.variables,
            "event": events,
            "context": [sample_context(journey_id, name, stage, step_id)],
        }
        refs = field_references(source)
        examples: dict[str, list[Any]] = {}
        typed: dict[tuple[int, int], list[Any]] = {}
        for ref in refs:
            values = self._check_reference(at, source, ref, variables.get(ref.variable, []))
            if values and not ref.tested:
                examples[ref.name] = typed[(ref.start, ref.end)] = values
        for mismatch in mismatched_comparisons(source, typed):
            message, offset = explain_mismatch(source, mismatch, refs, examples)
            self.add(at, message, offset=offset)

    def _check_reference(self, at: DocPath, source: str, ref: Any, candidates: list[Any]) -> list[Any]:
        """The sample's values of the chain ``ref`` (empty when it cannot tell); an unknown field
        is a problem."""
        current = candidates
        for i, name in enumerate(ref.fields):
            maps = [c for c in current if isinstance(c, Mapping)]
            if not maps or len(maps) < len(current) or (ref.tested and i == len(ref.fields) - 1):
                return []
            found = [m[name] for m in maps if name in m]
            if found:
                current = found
                continue
            keys = sorted({str(k) for m in maps for k in m})
            owner = ".".join((ref.variable, *ref.fields[:i]))
            hint = did_you_mean(name, keys)
            where = "sample.customer" if ref.variable == "customer" else "sample.events"
            advice = f"{hint} ({owner} has: {', '.join(keys) or 'nothing'}; if the field is real, add it to {where})"
            self.add(at, f'unknown field \'{name}\' in "{source}".{advice}'.replace(". (", " ("), offset=ref.offsets[i])
            return []
        return current

    # -- sends and templates ---------------------------------------------------------------

    def _check_send(self, at: DocPath, step: doc.SendStep, seen: list[dict[str, Any]]) -> None:
        send = step.send
        if send.channel not in CHANNELS:
            hint = did_you_mean(send.channel, CHANNELS)
            self.add((*at, "channel"), f"unknown channel '{send.channel}'.{hint} (installed: {', '.join(CHANNELS)})".replace(". (", " ("))
            return
        allowed = CHANNEL_PARTS[send.channel]
        inline = {part: getattr(send, part) for part in PARTS if getattr(send, part) is not None}
        for part in inline:
            if part not in allowed:
                uses = ", ".join(allowed) or "no template"
                self.add((*at, part), f"{send.channel} messages have no '{part}' (they use: {uses}); remove it", key=True)
        if send.channel == "retargeting":
            needs = {"audience": "the audience's name", "action": "add or remove"}
            for key, what in needs.items():
                if getattr(send, key) is None:
                    self.add(at, f"a retargeting send needs '{key}' ({what})")
            if send.template:
                self.add((*at, "template"), "a retargeting send has no template; remove it", key=True)
            return
        for key in ("audience", "action"):
            if getattr(send, key) is not None:
                self.add((*at, key), f"'{key}' is for retargeting sends only; remove it", key=True)
        if send.channel == "webhook" and not send.url:
            self.add(at, "a webhook send needs 'url', where the body is posted")
        if send.url and send.channel != "webhook":
            self.add((*at, "url"), "'url' is for webhook sends only; remove it", key=True)
        if send.template and inline:
            self.add(at, f"use either 'template' or inline parts ({', '.join(inline)}), not both")
            return
        sources: dict[str, tuple[str, DocPath, int]] = {}
        if send.template:
            templates = self._template_files((*at, "template"), send.template, allowed)
            if templates is None:
                return
            sources = templates
        else:
            sources = {part: (text, (*at, part), 0) for part, text in inline.items() if part in allowed}
        for group in CHANNELS[send.channel]:
            if not any(part in sources for part in group):
                wanted = " or ".join(f"'{p}'" for p in group)
                if send.template:
                    files = " or ".join(f"{send.template}.{p}{SUFFIX}" for p in group)
                    self.add((*at, "template"), f"template '{send.template}' has no {wanted} part; add {files} to {self.store.directory}")
                else:
                    self.add(at, f"{send.channel} messages need {wanted}; add it, or use a template")
        self._render(at, step, sources, seen)

    def _template_files(self, at: DocPath, name: str, allowed: tuple[str, ...]) -> dict[str, tuple[str, DocPath, int]] | None:
        files = self.store.parts(name)
        if not files:
            known = self.store.names()
            hint = did_you_mean(name, known)
            listing = f"in {self.store.directory}: {', '.join(known)}" if known else f"no templates in {self.store.directory}"
            self.add(at, f"unknown template '{name}'.{hint} ({listing})".replace(". (", " ("))
            return None
        found = {}
        for part, file in files.items():
            if part in allowed:
                try:
                    found[part] = (file.read_text(encoding="utf-8"), at, -1)
                except (OSError, UnicodeDecodeError) as exc:
                    self.add(at, f"cannot read {file}: {exc}")
        return found

    def _render(self, at: DocPath, step: doc.SendStep, sources: dict[str, tuple[str, DocPath, int]], seen: list[dict[str, Any]]) -> None:
        send = step.send
        compiled = {}
        for part, (text, where, shift) in sources.items():
            label = f"{send.template}.{part}" if send.template else f"{format_path(at)}.{part}"
            file = self.store.parts(send.template)[part] if shift < 0 and send.template else None
            try:
                compiled[part] = self.engine.compile(text, label, PARTS[part], file=self.store.shown(file) if file else None)
            except TemplateSyntaxProblem as exc:
                if file is not None:  # a file: say which file and line
                    self.add(where, f"Jinja syntax error in {file} line {exc.line}: {exc.reason}")
                else:
                    self._inline_syntax_problem(where, exc)
        journey_id, name, stage = self.journey_info
        context = {
            "customer": self.variables["customer"][0],
            "trigger": self.variables["trigger"][0],
            "event": seen[0] if seen else self.variables["trigger"][0],
            "context": sample_context(journey_id, name, stage, step.id),
            "now": dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone.utc),
        }
        for part, template in compiled.items():
            where = sources[part][1]
            try:
                template.render(context)
            except UndefinedVariable as exc:
                self.add(where, f"{exc}; add it to the journey's sample (sample.customer or sample.events) or fix the name")
            except TemplateError as exc:
                self.add(where, f"{exc} (rendering the journey's sample)")
        self.rendered[at] = compiled

    def _inline_syntax_problem(self, where: DocPath, exc: TemplateSyntaxProblem) -> None:
        mark = self.source.mark(where)
        problem = self.source.problem(where, f"Jinja syntax error: {exc.reason}")
        if mark is not None and mark.style in ("|", ">") and exc.line:
            problem = Problem(problem.path, problem.message, mark.line + exc.line, mark.column)
        self.problems.append(problem)

    # -- building --------------------------------------------------------------------------

    def _build(self, document: doc.JourneyDocument, path: Path | None) -> model.Journey:
        ids = [s.id for s in document.steps]

        def target(ref: str | None, index: int) -> str | None:
            if ref is None:
                return ids[index + 1] if index + 1 < len(ids) else None
            return None if ref == doc.END else ref

        steps = [self._build_step(s, i, target) for i, s in enumerate(document.steps)]
        trigger = document.trigger
        entry = document.entry
        reentry, _, after = entry.reentry.partition(" ")
        policy = document.policy
        return model.Journey(
            id=document.id,
            name=document.name,
            description=document.description,
            stage=document.stage,
            trigger=model.Trigger(
                event=getattr(trigger, "event", None),
                segment=getattr(trigger, "segment", None),
                when=self._compiled(("trigger", "when")),
            ),
            entry=model.Entry(reentry, parse_duration(after.strip()) if after else None, entry.concurrent),
            goal=self._outcome(document.goal, ("goal",)),
            exit_on=tuple(self._outcome(o, ("exit_on", i)) for i, o in enumerate(document.exit_on)),  # type: ignore[misc]
            policy=model.JourneyPolicy(
                kind=policy.kind,
                topic=policy.topic,
                quiet_hours=model.QuietHours(_time(policy.quiet_hours.start), _time(policy.quiet_hours.end), policy.quiet_hours.action)
                if policy.quiet_hours
                else None,
                frequency_cap=FrequencyCap(policy.frequency_cap.max, parse_duration(policy.frequency_cap.per))
                if policy.frequency_cap
                else None,
            ),
            sample=document.sample.model_dump(),
            steps=tuple(steps),
            path=path,
            locations={format_path(p): (m.line, m.column) for p, m in self.source.values.items()},
        )

    def _compiled(self, at: DocPath) -> Any:
        return self.compiled.get(at)

    def _outcome(self, outcome: doc.EndEventSpec | None, at: DocPath) -> model.EndEvent | None:
        if outcome is None:
            return None
        goto = None if outcome.goto in (None, doc.END) else outcome.goto
        within = getattr(outcome, "within", None)  # a goal's (doc.GoalSpec)
        if within is not None:
            return model.EndEvent(outcome.event, self._compiled((*at, "when")), goto, parse_duration(within))
        return model.EndEvent(outcome.event, self._compiled((*at, "when")), goto)

    def _build_step(self, step: Any, index: int, target: Any) -> model.Step:
        at: DocPath = ("steps", index)
        mark = self.source.mark(at)
        common = {"id": step.id, "stage": step.stage, "description": step.description, "line": mark.line if mark else None}
        if isinstance(step, doc.SendStep):
            send = step.send
            return model.SendStep(
                next=target(step.goto, index), channel=send.channel, template=send.template,
                parts=self.rendered.get((*at, "send"), {}), url=send.url, audience=send.audience,
                action=send.action, message_kind=send.kind, **common,
            )  # fmt: skip
        if isinstance(step, doc.WaitStep):
            if isinstance(step.wait, str):
                return model.WaitStep(next=target(step.goto, index), duration=parse_duration(step.wait), **common)
            duration = parse_duration(step.wait.for_) if step.wait.for_ else None
            return model.WaitStep(next=target(step.goto, index), duration=duration, until=_time(step.wait.until), **common)
        if isinstance(step, doc.WaitUntilStep):
            wait = step.wait_until
            return model.WaitUntilStep(
                next=target(None, index), event=wait.event, when=self._compiled((*at, "wait_until", "when")),
                timeout=parse_duration(wait.timeout) if wait.timeout else None,
                on_event=target(step.on_event, index), on_timeout=target(step.on_timeout, index), **common,
            )  # fmt: skip
        if isinstance(step, doc.BranchStep):
            cases = tuple(
                model.BranchCase(self.compiled[(*at, "branch", i, "when")], target(item.goto, index))  # type: ignore[arg-type]
                for i, item in enumerate(step.branch)
                if isinstance(item, doc.BranchCase)
            )
            otherwise = next((item.else_ for item in step.branch if isinstance(item, doc.BranchElse)), None)
            return model.BranchStep(next=target(otherwise, index), cases=cases, **common)
        if isinstance(step, doc.SplitStep):
            paths = tuple(
                model.SplitPath(p.name or (p.goto if p.goto and p.goto != doc.END else f"path_{i + 1}"), p.weight, target(p.goto, index))
                if isinstance(p, doc.SplitPath)
                else model.SplitPath("holdout", p.holdout, None, holdout=True)
                for i, p in enumerate(step.split)
            )
            return model.SplitStep(next=target(None, index), paths=paths, **common)
        if isinstance(step, doc.UpdateStep):
            return model.UpdateStep(next=target(step.goto, index), traits=dict(step.update.traits or {}), set_stage=step.update.stage, **common)
        if isinstance(step, doc.RewardStep):
            reward = step.reward
            points = self.compiled[(*at, "reward", "points")] if isinstance(reward.points, str) else reward.points
            return model.RewardStep(next=target(step.goto, index), points=points, reason=reward.reason, to=reward.to, **common)
        if isinstance(step, doc.ReferralStep):
            return model.ReferralStep(next=target(step.goto, index), program=step.referral.program, store_as=step.referral.store_as, **common)
        return model.ExitStep(next=None, conversion=step.exit.conversion, reason=step.exit.reason, **common)


def _edges(step: Any, index: int, steps: list[Any], ids: dict[str, int], here: set[str]) -> list[tuple[int, set[str]]]:
    """The steps reachable from ``step`` in one move, with the events that may be current there."""

    def resolve(ref: str | None) -> int | None:
        if ref is None:
            return index + 1 if index + 1 < len(steps) else None
        return ids.get(ref)

    moves: list[tuple[str | None, set[str]]]
    if isinstance(step, doc.WaitUntilStep):
        moves = [(step.on_event, {step.wait_until.event}), (step.on_timeout, here)]
    elif isinstance(step, doc.BranchStep):
        refs: list[str | None] = [item.goto if isinstance(item, doc.BranchCase) else item.else_ for item in step.branch]
        if not any(isinstance(item, doc.BranchElse) for item in step.branch):
            refs.append(None)
        moves = [(ref, here) for ref in refs]
    elif isinstance(step, doc.SplitStep):
        moves = [(p.goto, here) for p in step.split if isinstance(p, doc.SplitPath)]
    elif isinstance(step, doc.ExitStep):
        moves = []
    else:
        moves = [(getattr(step, "goto", None), here)]
    edges = []
    for ref, events in moves:
        if ref == doc.END:
            continue
        found = resolve(ref)
        if found is not None:
            edges.append((found, events))
    return edges


def _time(text: str) -> dt.time:
    hours, minutes = text.split(":")
    return dt.time(int(hours), int(minutes))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
