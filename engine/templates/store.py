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

    def __init__(self, directory: Path) -> None:
        self.directory = directory
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
