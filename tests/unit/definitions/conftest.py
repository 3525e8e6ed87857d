from __future__ import annotations

from pathlib import Path

import pytest

from engine.definitions import Journey, load_text

ROOT = Path(__file__).parents[3]

HEADER = """\
id: sample_journey
name: Sample
stage: consideration
trigger:
  event: checkout_started
sample:
  customer: {first_name: Ada}
  events:
    checkout_started:
      properties: {cart_value: 120, order_id: o-1}
    order_completed:
      properties: {order_id: o-1}
"""


@pytest.fixture
def load():
    """Load a journey from YAML text (a header with id, stage, trigger and sample is prepended
    unless the text has its own ``id:``)."""

    def _load(text: str, templates: Path | None = None) -> Journey:
        body = text if text.startswith("id:") else HEADER + text
        return load_text(body, filename="journeys/sample.yaml", templates=templates or ROOT / "journeys" / "templates")

    return _load
