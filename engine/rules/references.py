"""Find the fields an expression reads (``event.properties.cart_value``), to check them
against a journey's sample data; CEL's checker cannot, because event payloads are maps."""

from __future__ import annotations

import re
from dataclasses import dataclass

# String literals (so their contents are not mistaken for references), then
# variable.field.field chains not preceded by a dot or an identifier character.
_STRING = re.compile(r"""[rRbB]*('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""", re.S)
_CHAIN = re.compile(r"(?<![\w.])(event|trigger|customer|context)((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")
_SEGMENT = re.compile(r"\.\s*([A-Za-z_]\w*)")


@dataclass(frozen=True)
class FieldReference:
    """A chain of field selections from a variable.

    Attributes:
        variable: ``event``, ``trigger``, ``customer`` or ``context``.
        fields: the selected fields in order, e.g. ``("properties", "cart_value")``.
        offsets: the 0-based offset in the source of each field name.
        tested: True inside ``has(...)``: the last field may be absent on purpose.
        start: the 0-based offset of the variable's name; ``end`` is just past the last field.
    """

    variable: str
    fields: tuple[str, ...]
    offsets: tuple[int, ...]
    tested: bool
    start: int = 0
    end: int = 0

    @property
    def name(self) -> str:
        """The chain as written without spaces: ``trigger.properties.cart_value``."""
        return ".".join((self.variable, *self.fields))


def field_references(source: str) -> list[FieldReference]:
    """Return the field chains an expression reads, leaving out a trailing method name."""
    blanked = _STRING.sub(lambda m: " " * len(m.group(0)), source)
    references = []
    for match in _CHAIN.finditer(blanked):
        segments = list(_SEGMENT.finditer(match.group(2)))
        if match.group(3):  # event.name.startsWith(...): the last name is a method
            segments = segments[:-1]
        if not segments:
            continue
        base = match.start(2)
        before = blanked[: match.start()].rstrip()
        references.append(
            FieldReference(
                variable=match.group(1),
                fields=tuple(s.group(1) for s in segments),
                offsets=tuple(base + s.start(1) for s in segments),
                tested=before.endswith("has("),
                start=match.start(),
                end=base + segments[-1].end(1),
            )
        )
    return references
