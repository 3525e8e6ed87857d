"""YAML syntax errors in a journey's terms: which key is out of line, where it could go, and the lines.

PyYAML says ``expected <block end>, but found '<block mapping start>'`` when a key is
indented to no level above it; a person needs to hear that ``template`` is indented
5 spaces, that 6 puts it under ``send`` with ``channel`` and 4 beside ``send``.
"""

from __future__ import annotations

from collections.abc import Iterator

import yaml

_EXCERPT = 3  # lines shown, ending with the one at fault


def explain(text: str, exc: yaml.MarkedYAMLError) -> tuple[str, int | None, int | None]:
    """The message for a syntax error in ``text`` (with the lines around it), and its 1-based line and column."""
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return exc.problem or "invalid YAML", None, None
    lines = text.splitlines()
    reason = _reason(lines, exc, mark.line, mark.column)
    return f"{reason}\n{_excerpt(lines, mark.line)}", mark.line + 1, mark.column + 1


def _reason(lines: list[str], exc: yaml.MarkedYAMLError, number: int, column: int) -> str:
    problem = exc.problem or "invalid YAML"
    line = lines[number] if number < len(lines) else ""
    if "'\\t'" in problem or "\t" in line[: len(line) - len(line.lstrip())]:
        return "YAML syntax error: a tab in the indentation; YAML indents with spaces only: replace the tab with spaces"
    if problem.startswith("expected <block end>"):
        found = _out_of_line(lines, number, column)
        if found:
            return f"YAML indentation error: {found}"
    if problem == "mapping values are not allowed here":
        found = _value_or_continuation(lines, number, column)
        if found:
            return found
    opened = exc.context_mark
    for kind, start, close in (("mapping", "{", "}"), ("sequence", "[", "]")):
        if exc.context == f"while parsing a flow {kind}" and opened is not None and f"'{close}'" in problem:
            return (f"YAML syntax error: the '{start}' on line {opened.line + 1}, "
                    f"col {opened.column + 1} is never closed; end it with '{close}' on that line")
    return f"YAML syntax error: {problem}" + (f" ({exc.context})" if exc.context else "")


def _out_of_line(lines: list[str], number: int, column: int) -> str | None:
    """A key or list item indented to no level above it: say the levels it could join."""
    line = lines[number]
    if line[column:].startswith("-"):
        for before in _content_lines(lines, number):
            dash = _dash(lines[before])
            if dash is not None and dash != column:
                return (f"this list item is indented {column} spaces, but the items before it are at {dash} "
                        f"('{lines[before].strip()}', line {before + 1}); indent every item of a list alike")
            if _indent(lines[before]) <= column:
                break
        return ("a list item ('- ') where a key is expected; remove the '- ', or indent the item "
                "under the key whose list it is")
    key = _key(line)
    previous = _content_lines(lines, number)
    options = []
    nearest = next(previous, None)
    if nearest is not None and _indent(lines[nearest]) > column:
        deeper = _indent(lines[nearest])
        parent = next((n for n in _content_lines(lines, nearest) if _indent(lines[n]) < deeper), None)
        under = f"under '{_key(lines[parent])}' " if parent is not None else ""
        options.append(f"{deeper} spaces to put it {under}with '{_key(lines[nearest])}' (line {nearest + 1})")
    for before in ([nearest] if nearest is not None else []) + list(previous):
        if _indent(lines[before]) < column:
            options.append(f"{_indent(lines[before])} spaces to put it beside '{_key(lines[before])}' (line {before + 1})")
            break
    if not options:
        return None
    return (f"'{key}' is indented {column} spaces, in line with no key above it; "
            f"indent it {', or '.join(options)}")


def _value_or_continuation(lines: list[str], number: int, column: int) -> str | None:
    """``key: a: b`` (a value with ': ' needs quotes), or a key indented under a key that has a value."""
    line = lines[number]
    key = _key(line)
    first_colon = line.find(":", _indent(line))
    if first_colon != column:
        value = line[first_colon + 1:].strip()
        if value.startswith(("{", "[", "'", '"')):  # text after a closed mapping, list or quote
            return None
        return (f"YAML syntax error: the value of '{key}' contains ': '; put it in quotes: "
                f"{key}: \"{value.replace(chr(34), chr(92) + chr(34))}\"")
    nearest = next(_content_lines(lines, number), None)
    if nearest is None or _indent(lines[nearest]) >= _indent(line):
        return None
    above = _key(lines[nearest])
    return (f"YAML indentation error: '{key}' is indented more than '{above}' (line {nearest + 1}), "
            f"so it reads as more of {above}'s value; indent it {_indent(lines[nearest])} spaces, like '{above}'")


def _content_lines(lines: list[str], number: int) -> Iterator[int]:
    """The numbers of the lines before ``number`` that hold a key or item (not blank, not a comment), nearest first."""
    for before in range(number - 1, -1, -1):
        stripped = lines[before].strip()
        if stripped and not stripped.startswith("#"):
            yield before


def _indent(line: str) -> int:
    """The column of the line's key: past its spaces and any ``- `` of list items."""
    column = len(line) - len(line.lstrip(" "))
    while line[column:].startswith("- "):
        column += 2
        column += len(line[column:]) - len(line[column:].lstrip(" "))
    return column


def _dash(line: str) -> int | None:
    column = len(line) - len(line.lstrip(" "))
    return column if line[column:].startswith("- ") or line[column:] == "-" else None


def _key(line: str) -> str:
    return line[_indent(line):].split(":", 1)[0].strip()


def _excerpt(lines: list[str], number: int) -> str:
    first = max(0, number - _EXCERPT + 1)
    shown = []
    for at in range(first, min(number + 1, len(lines))):
        marker = ">" if at == number else " "
        shown.append(f"    {marker} {at + 1:>3} | {lines[at]}".rstrip())
    return "\n".join(shown)
