"""Nothing passes between the steps of a transaction behind the caller's back."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_no_module_keeps_state_in_session_info():
    # Given every module of the engine and the channels
    files = sorted((ROOT / "engine").rglob("*.py")) + sorted((ROOT / "channels").rglob("*.py"))

    # When we look for reads and writes of a SQLAlchemy session's ``info`` dict
    uses = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in files
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "info"
        and isinstance(node.value, ast.Name) and "session" in node.value.id
    ]

    # Then there are none: what a batch loaded or holds back lives in its UnitOfWork
    assert len(files) > 20 and uses == [], f"pass an engine.unit_of_work.UnitOfWork instead: {uses}"
