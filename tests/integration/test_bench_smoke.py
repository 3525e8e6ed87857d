"""bench/e2e.py at a tiny size: it runs every phase to its end and prints its summary line.

An outcome, not a timing: the bench exits 0 (every event applied, every delivery final,
nothing stuck past its deadline) and its last line has the documented format, whatever
the figures are.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL, REDIS_URL

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "e2e.py"
NUMBER = r"\d+(?:\.\d+)?"
SUMMARY = re.compile(
    rf"e2e: {NUMBER} events/s; mix: {NUMBER} events/s; baseline: {NUMBER} msg/s; ratio: {NUMBER}; "
    rf"p50: {NUMBER} ms; p99: {NUMBER} ms; timers: {NUMBER}/s"
)


def test_a_tiny_bench_finishes_every_phase_and_ends_with_its_summary_line(pg_url: str, redis_namespace: str) -> None:
    # Given PostgreSQL and Redis (the fixtures skip, or fail under CI, without them); the bench makes its own schema
    env = dict(os.environ, TEST_DATABASE_URL=PG_URL, TEST_REDIS_URL=REDIS_URL)
    # When it runs at a tiny size, on one small worker
    done = subprocess.run(
        [sys.executable, str(BENCH), "--events", "200", "--quick", "--processes", "1", "--threads", "4",
         "--web-workers", "1", "--deadline", "120"],
        env=env, capture_output=True, text=True, timeout=480,
    )
    # Then it exits 0, and its last line is the summary
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert SUMMARY.fullmatch(last), done.stdout
