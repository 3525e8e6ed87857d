"""The README's first command: `journey dev --demo` on the embedded default."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from engine.demo import _sample_events
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_dev_demo_shows_what_each_customer_received(tmp_path):
    shutil.copytree(ROOT / "journeys", tmp_path / "journeys")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["LOG_LEVEL"] = "WARNING"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "dev", "--demo", "--port", str(free_port())],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("linus"):  # the last customer's block has begun
                time.sleep(0.5)
                break
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    lines += out.splitlines()
    text = "\n".join(lines)
    assert "demo: 7 journeys deployed" in text, err
    assert "What each customer received:" in text, err
    assert (tmp_path / "journey.db").exists()  # the embedded default: a SQLite file here
    received = [line for line in lines if line.startswith("  ")]
    assert any("welcome_series.welcome" in line and " sent " in line for line in received)
    assert any("order_followup.thank_you" in line and " sent " in line for line in received)
    assert not any(" failed " in line for line in received), text


def test_a_misspelt_type_in_a_sample_file_names_the_line_and_the_type_meant(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "cart.jsonl").write_text(
        '{"type": "identify", "userId": "ada", "traits": {"first_name": "Ada"}}\n'
        '{"type": "trak", "userId": "ada", "event": "checkout_started"}\n'
    )

    with pytest.raises(ValueError) as caught:
        _sample_events(samples, datetime(2030, 1, 1, tzinfo=timezone.utc))

    assert str(caught.value) == (
        f"{samples / 'cart.jsonl'}:2: type: unknown type 'trak'. Did you mean 'track'? "
        "(expected one of identify, track, page, screen, group, alias)"
    )
