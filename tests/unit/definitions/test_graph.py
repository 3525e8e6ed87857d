from __future__ import annotations

from pathlib import Path

from engine.definitions import load_journey
from engine.definitions.graph import mermaid

ROOT = Path(__file__).parents[3]


def test_graph_shows_stages_steps_and_labelled_paths() -> None:
    chart = mermaid(load_journey(ROOT / "journeys" / "welcome_series.yaml"))

    assert chart.startswith("flowchart TD\n")
    assert "subgraph stage_awareness[awareness]" in chart
    assert "subgraph stage_consideration[consideration]" in chart  # after the update step
    assert 's_exploring -->|"product_viewed"| s_tips' in chart
    assert 's_exploring -->|"timeout"| s_nudge' in chart
    assert 's_nudge -->|"else"| s_email_nudge' in chart
    assert 'goal_order_completed{{"goal: order_completed"}} -.-> finish' in chart


def test_graph_escapes_quotes_in_conditions(load) -> None:
    text = "steps:\n  - id: b\n    branch:\n      - when: customer.first_name == \"Ada\"\n        goto: end\n"

    chart = mermaid(load(text))

    assert '-->|"customer.first_name == #quot;Ada#quot;"| finish' in chart
