"""Message templates: Jinja2 in an immutable sandbox, strict about undefined names, capped.

``TemplateEngine().compile(source, name, kind)`` gives a :class:`Template` whose
``render(context)`` returns the text or raises :class:`~engine.errors.TemplateError` with a
reason a person can act on. :class:`TemplateStore` finds a journey's template files.
"""

from __future__ import annotations

from engine.templates.sandbox import (
    KINDS,
    MAX_OUTPUT_CHARS,
    MAX_RENDER_CPU_SECONDS,
    MAX_RENDER_STEPS,
    Template,
    TemplateEngine,
    TemplateSyntaxProblem,
    UndefinedVariable,
)
from engine.templates.store import TemplateStore

__all__ = [
    "KINDS",
    "MAX_OUTPUT_CHARS",
    "MAX_RENDER_CPU_SECONDS",
    "MAX_RENDER_STEPS",
    "Template",
    "TemplateEngine",
    "TemplateStore",
    "TemplateSyntaxProblem",
    "UndefinedVariable",
]
