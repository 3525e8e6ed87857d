"""Read a YAML journey file into plain data, keeping the line and column of every node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.definitions.syntax import explain
from engine.errors import Problem

Path = tuple[str | int, ...]
# libyaml when installed: parsing is most of the cost of loading a journey.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Mark:
    """A 1-based position in the file; ``style`` is the scalar's quote style, if any."""

    line: int
    column: int
    style: str | None = None
    end_line: int = 0


@dataclass
class Source:
    """A parsed document: ``data`` as plain Python, and where each value and key was written."""

    data: Any
    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def mark(self, path: Path, *, key: bool = False) -> Mark | None:
        """The position of the value (or the key) at ``path``, else of its nearest ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return None

    def problem(self, path: Path, message: str, *, key: bool = False, offset: int | None = None) -> Problem:
        """A Problem located at ``path``; ``offset`` moves the column into a one-line scalar."""
        mark = self.mark(path, key=key)
        line, column = (mark.line, mark.column) if mark else (None, None)
        if mark and offset is not None and mark.style in (None, "'", '"') and mark.end_line == mark.line:
            column = mark.column + offset + (1 if mark.style else 0)
        return Problem(format_path(path), message, line, column)


def format_path(path: Path) -> str:
    """``("steps", 2, "send")`` -> ``steps[2].send``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_yaml(text: str) -> Source:
    """Parse YAML text; syntax errors and duplicate keys become located problems, not exceptions."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return _syntax_problem(text)
    source = Source(None)
    if node is None:
        return source
    source.data = _build(node, (), source)
    return source


def _syntax_problem(text: str) -> Source:
    """Parse again with the pure-Python loader, whose messages are the same everywhere."""
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        message, line, column = explain(text, exc)
        return Source(None, problems=[Problem("", message, line, column)])
    except yaml.YAMLError as exc:
        return Source(None, problems=[Problem("", f"YAML error: {exc}")])
    return Source(None, problems=[Problem("", "invalid YAML")])


_CONSTRUCTOR = yaml.SafeLoader("")


def _build(node: yaml.Node, path: Path, source: Source) -> Any:
    source.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in _pairs(node, path, source):
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key in result:
                first = source.keys.get((*path, key))
                where = f" (first at line {first.line})" if first else ""
                again = _mark(key_node)
                message = f"duplicate key '{key}'{where}; keep only one"
                source.problems.append(Problem(format_path((*path, key)), message, again.line, again.column))
                continue
            source.keys[(*path, key)] = _mark(key_node)
            result[key] = _build(value_node, (*path, key), source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, index), source) for index, item in enumerate(node.value)]
    return _scalar(node)


def _pairs(node: yaml.MappingNode, path: Path, source: Source) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            source.problems.append(source.problem(path, "merge keys (<<) are not supported; repeat the keys"))
            continue
        yield key_node, value_node


def _scalar(node: yaml.Node) -> Any:
    # YAML 1.1 reads 09:00 as the base-60 integer 540; a journey means a time of day.
    if node.tag == "tag:yaml.org,2002:int" and ":" in str(node.value):
        return str(node.value)
    if node.tag == "tag:yaml.org,2002:float" and ":" in str(node.value):
        return str(node.value)
    try:
        return _CONSTRUCTOR.construct_object(node, deep=True)
    except yaml.YAMLError:
        return str(node.value)


def _mark(node: yaml.Node) -> Mark:
    style = getattr(node, "style", None)
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1, style or None, node.end_mark.line + 1)
