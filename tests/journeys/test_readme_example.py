"""The JourneyTest example the README shows, kept true by running it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_runs(monkeypatch):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(from engine.testing import JourneyTest.*?)```", readme, re.S)
    assert example is not None, "the README lost its JourneyTest example"
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {}
    exec(compile(example.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            value()
