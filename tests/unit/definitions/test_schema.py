"""The committed JSON Schema matches the models, and check-jsonschema accepts every shipped journey."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.definitions import json_schema, json_schema_text

ROOT = Path(__file__).parents[3]

SCHEMA = ROOT / "schema" / "journey.schema.json"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == json_schema_text(), (
        "schema/journey.schema.json is out of date: run `journey schema -o schema/journey.schema.json`"
    )


def test_schema_is_draft_07_with_definitions() -> None:
    schema = json_schema()

    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "$defs" not in schema and "SendStep" in schema["definitions"]


def _check(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_check_jsonschema_accepts_every_shipped_journey() -> None:
    files = sorted((ROOT / "journeys").glob("*.yaml"))

    result = _check(*files)

    assert len(files) >= 5
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_jsonschema_rejects_a_structurally_broken_journey() -> None:
    result = _check(ROOT / "tests" / "corpus" / "unknown_top_key.yaml")

    assert result.returncode != 0
    assert "stages" in result.stdout + result.stderr
