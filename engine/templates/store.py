"""Where a journey's template files live and how their parts are named."""

from __future__ import annotations

from pathlib import Path

#: The parts a template may have, and how each renders (see :data:`engine.templates.KINDS`).
PARTS: dict[str, str] = {"subject": "text", "title": "text", "text": "text", "html": "html", "body": "json"}
SUFFIX = ".j2"


class TemplateStore:
    """The template files of a directory: ``<name>.<part>.j2``, e.g. ``cart_reminder.subject.j2``.

    A journey's templates live in ``templates/`` next to the journey file.
    """

    def __init__(self, directory: Path, *, shown_as: str | None = None) -> None:
        self.directory = directory
        self.shown_as = shown_as
        self._parts: dict[str, dict[str, Path]] = {}
        if directory.is_dir():
            for path in sorted(directory.glob(f"*{SUFFIX}")):
                stem = path.name.removesuffix(SUFFIX)
                name, _, part = stem.rpartition(".")
                if name and part in PARTS:
                    self._parts.setdefault(name, {})[part] = path

    def names(self) -> list[str]:
        """The template names found, sorted."""
        return sorted(self._parts)

    def parts(self, name: str) -> dict[str, Path]:
        """The files of template ``name`` by part (``subject``, ``text``...); empty if unknown."""
        return dict(self._parts.get(name, {}))

    def shown(self, path: Path) -> str:
        """How messages name the template file ``path``: as found, or under ``shown_as`` (a deployed version's copy)."""
        return f"{self.shown_as}/{path.name}" if self.shown_as else str(path)
