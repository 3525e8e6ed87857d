"""Exceptions raised by the journey engine.

Every error the engine raises on purpose derives from :class:`JourneyError`, so a
caller can catch the whole family at once. The tree::

    JourneyError
    ├── ConfigError          a setting in the environment is missing or malformed
    ├── DefinitionError      a journey file is invalid (carries every problem found)
    ├── RuleError            a CEL condition does not compile or cannot be evaluated
    ├── TemplateError        a template does not compile or render
    ├── PayloadError         an incoming event payload is invalid (carries every problem)
    │   └── ConflictError    well formed, but what it names is in a state that refuses it
    ├── AuthError            an API key is missing, wrong, revoked or lacks the scope
    ├── NotFoundError        the thing a request names (a customer, an entry) does not exist
    ├── ChannelError         a channel adapter failed to send (knows if a retry may help)
    └── StorageError         the database is unreachable or in an unexpected state

Messages say where, what, and what to do, so that printing ``str(error)`` is enough.
"""

from __future__ import annotations

from dataclasses import dataclass


class JourneyError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(JourneyError):
    """A setting read from the environment is missing or malformed."""


@dataclass(frozen=True)
class Problem:
    """One problem found while checking input: where it is and what to do about it.

    Attributes:
        path: where in the document, e.g. ``steps[2].send.channel`` or ``batch[3].userId``.
        message: what is wrong and, where possible, how to fix it.
        line: 1-based line in the source file, when known.
        column: 1-based column in the source file, when known.
    """

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, col {self.column}, " if self.line is not None else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"

    def as_dict(self) -> dict[str, object]:
        """Return the problem as a JSON-friendly dict."""
        data: dict[str, object] = {"path": self.path, "message": self.message}
        if self.line is not None:
            data["line"] = self.line
            data["column"] = self.column
        return data


class _ProblemsError(JourneyError):
    """An error that collects every problem found, and names them all in its message."""

    def __init__(self, subject: str, problems: list[Problem]) -> None:
        self.subject = subject
        self.problems = list(problems)
        count = len(self.problems)
        reasons = "reason" if count == 1 else "reasons"
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{subject} is invalid for {count} {reasons}:\n{lines}")


class DefinitionError(_ProblemsError):
    """A journey file is invalid; ``problems`` lists every problem with its location."""


class PayloadError(_ProblemsError):
    """An incoming payload is invalid; ``problems`` lists every problem with its field path."""


class ConflictError(PayloadError):
    """A well-formed request that the state of what it names refuses (HTTP 409), e.g. resolving
    a delivery that is not ``unknown``; ``problems`` names each one."""


class RuleError(JourneyError):
    """A CEL condition does not compile, or failed while being evaluated."""


class TemplateError(JourneyError):
    """A template does not compile, or failed while rendering."""


class AuthError(JourneyError):
    """An API key is missing, wrong or revoked (status 401), or lacks the scope (403)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(JourneyError):
    """What a request names (a customer, a suppression entry) does not exist: HTTP 404."""


class ChannelError(JourneyError):
    """A channel adapter failed to send.

    Attributes:
        retryable: True when the same send may succeed later (a timeout, a 5xx, a 429);
            False when retrying cannot help (a rejected address, a 4xx).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class StorageError(JourneyError):
    """The database is unreachable or not in the state the engine expects."""


def did_you_mean(name: str, choices: object) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest of ``choices`` to ``name``, or ``""``."""
    import difflib  # local: errors.py stays import-light

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)  # type: ignore[attr-defined]
    return f" Did you mean '{close[0]}'?" if close else ""
