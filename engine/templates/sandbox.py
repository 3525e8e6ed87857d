"""The Jinja2 sandbox that renders every message the engine sends."""

from __future__ import annotations

import json
import math
import operator
import threading
import time
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import TemplateError, did_you_mean

MAX_OUTPUT_CHARS = 100_000  # an email body larger than this is a mistake, not a message
# A render's budget does not depend on how busy the machine is: a message that renders on
# an idle machine renders under load. Steps are the calls, attribute and item lookups and
# output pieces of one render (a shipped template takes a few dozen); CPU time is the
# rendering thread's own (waiting for a core or for the GIL does not count), a backstop for
# loops that do none of those.
MAX_RENDER_STEPS = 100_000
MAX_RENDER_CPU_SECONDS = 1.0
_CPU_CHECK_EVERY = 16  # steps between two reads of the thread's CPU clock (a system call)
_MAX_REPEAT = 10_000  # 'x' * n and n ** m are capped so one expression cannot exhaust memory

#: What each kind of template part renders: plain text, HTML (autoescaped) or a JSON body.
KINDS = ("text", "html", "json")


class TemplateSyntaxProblem(TemplateError):
    """A template does not compile; ``line`` is the 1-based line within the template."""

    def __init__(self, name: str, line: int | None, message: str) -> None:
        self.name = name
        self.line = line
        self.reason = message
        where = f" line {line}" if line else ""
        super().__init__(f"template {name}{where}: {message}")


class UndefinedVariable(TemplateError):
    """A template used a variable or field that the render context does not have."""


class _Undefined(jinja2.StrictUndefined):
    """StrictUndefined whose message names the missing field and suggests a close one."""

    @property
    def _undefined_message(self) -> str:
        name, owner = self._undefined_name, self._undefined_obj
        if owner is jinja2.utils.missing:
            return f"'{name}' is not defined"
        if isinstance(owner, Mapping):
            keys = sorted(str(k) for k in owner)
            hint = did_you_mean(name, keys) if name else ""
            return f"no field '{name}'{'.' + hint if hint else ''} (has: {', '.join(keys) or 'nothing'})"
        return f"{type(owner).__name__} value has no field '{name}'"


class _Budget(threading.local):
    """Steps and CPU time left to the render in progress, spent at every call, lookup and output piece.

    Thread-local: Dramatiq workers render in several threads with one shared engine.
    Outside a render the budget is unlimited.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.left = math.inf
        self.cpu_seconds = 0.0
        self.cpu_until = math.inf

    def start(self, steps: int, cpu_seconds: float) -> None:
        self.steps, self.left = steps, steps
        self.cpu_seconds, self.cpu_until = cpu_seconds, time.thread_time() + cpu_seconds

    def stop(self) -> None:
        self.left, self.cpu_until = math.inf, math.inf

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise TemplateError(
                f"rendering took more than {self.steps} steps (calls, lookups and output pieces); "
                "simplify the loops or render less"
            )
        if self.left % _CPU_CHECK_EVERY == 0 and time.thread_time() > self.cpu_until:
            raise TemplateError(f"rendering used more than {self.cpu_seconds}s of CPU time; simplify the loops")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.budget = _Budget()

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*" and (isinstance(left, (str, list)) or isinstance(right, (str, list))):
            count = right if isinstance(left, (str, list)) else left
            if isinstance(count, int) and count > _MAX_REPEAT:
                raise TemplateError(f"repeating a value {count} times is over the limit of {_MAX_REPEAT}")
        if operator_ == "**" and isinstance(right, int) and right > 64:
            raise TemplateError("an exponent over 64 is not allowed in a template")
        return (operator.mul if operator_ == "*" else operator.pow)(left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self.budget.spend()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget.spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.budget.spend()
        return super().getitem(obj, argument)


class Template:
    """A compiled template; :meth:`render` gives its output or raises TemplateError."""

    def __init__(self, name: str, source: str, kind: str, compiled: jinja2.Template, engine: TemplateEngine,
                 file: str | None = None) -> None:
        self.name = name
        self.source = source
        self.kind = kind
        self.file = file
        self._compiled = compiled
        self._engine = engine

    def _label(self, exc: BaseException | None = None) -> str:
        """``template cart_reminder.text (journeys/templates/cart_reminder.text.j2 line 3)``: the name, file and line."""
        line = _template_line(exc) if exc is not None else None
        where = " ".join(part for part in (self.file or "", f"line {line}" if line else "") if part)
        return f"template {self.name} ({where})" if where else f"template {self.name}"

    def render(self, context: Mapping[str, Any]) -> str:
        """Render with the given variables (``customer``, ``event``, ``trigger``, ``context``...).

        Raises:
            TemplateError: a variable is missing, the output is too large, the render
                went over its budget of steps or CPU time, or a JSON body is not valid
                JSON. The message says which and where.
        """
        budget = self._engine.sandbox.budget
        budget.start(self._engine.max_steps, self._engine.max_cpu_seconds)
        size, chunks = 0, []
        try:
            for chunk in self._compiled.generate(dict(context)):
                size += len(chunk)
                if size > self._engine.max_output:
                    raise TemplateError(f"{self._label()}: output exceeds {self._engine.max_output} characters")
                budget.spend()
                chunks.append(chunk)
        except TemplateError as exc:
            if str(exc).startswith(f"template {self.name}"):
                raise
            raise TemplateError(f"{self._label(exc)}: {exc}") from None
        except jinja2.UndefinedError as exc:
            raise UndefinedVariable(f"{self._label(exc)}: {exc}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{self._label(exc)}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a filter on a wrong type, a division by zero
            raise TemplateError(f"{self._label(exc)}: {type(exc).__name__}: {exc}") from None
        finally:
            budget.stop()
        output = "".join(chunks)
        if self.kind == "json":
            try:
                json.loads(output)
            except ValueError as exc:
                raise TemplateError(f"{self._label()}: the body is not valid JSON ({exc})") from None
        return output

    def __repr__(self) -> str:
        return f"Template({self.name!r}, kind={self.kind!r})"


class TemplateEngine:
    """Compiles templates in the sandbox; one engine is shared by every template it compiles."""

    def __init__(self, *, max_output: int = MAX_OUTPUT_CHARS, max_steps: int = MAX_RENDER_STEPS,
                 max_cpu_seconds: float = MAX_RENDER_CPU_SECONDS) -> None:
        self.max_output = max_output
        self.max_steps = max_steps
        self.max_cpu_seconds = max_cpu_seconds
        self.sandbox = _Sandbox(undefined=_Undefined, autoescape=False, keep_trailing_newline=False)
        self._html = _Sandbox(undefined=_Undefined, autoescape=True)
        self._html.budget = self.sandbox.budget
        self._compiled: dict[tuple[str, str], jinja2.Template] = {}

    def compile(self, source: str, name: str, kind: str = "text", *, file: str | None = None) -> Template:
        """Compile a template.

        Args:
            source: the Jinja2 text.
            name: how messages name it, e.g. ``cart_reminder.subject``.
            kind: ``text``, ``html`` (autoescaped) or ``json`` (must render valid JSON).
            file: the file it was read from, which render errors name with the line.

        Raises:
            TemplateSyntaxProblem: a Jinja syntax error, with its line in the template.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        compiled = self._compiled.get((source, kind))
        if compiled is None:
            env = self._html if kind == "html" else self.sandbox
            try:
                compiled = env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateSyntaxProblem(name, exc.lineno, exc.message or "syntax error") from None
            # Journeys share templates: compile each text once (Jinja compiles to Python, slowly).
            self._compiled[(source, kind)] = compiled
        return Template(name, source, kind, compiled, self, file)


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised at: Jinja puts the template's frames in the traceback."""
    line = None
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == "<template>":  # from_string's templates have no file name
            line = trace.tb_lineno
        trace = trace.tb_next
    return line
