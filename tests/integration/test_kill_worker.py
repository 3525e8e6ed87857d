"""``kill -9`` of ``journey worker`` while it sends email, with serve and scheduler running.

The processes are the real ones (bench/kill.py starts them, on PostgreSQL and Redis, or
RabbitMQ for the first test, ``SMTP_URL`` pointing at an aiosmtpd server on loopback); outcomes are judged at the
SMTP server and in the database. ``python bench/kill.py`` is the same run, larger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.kill import Figures, Running, run
from tests.conftest import BROKERS, REDIS_URL, broker_environment

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_kills_lose_nothing_send_nothing_twice_and_leave_only_sends_in_flight_unknown(
    pg_url: str, broker: str, tmp_path: Path
) -> None:
    # Given 300 orders, each sending one email; when the worker is killed 3 times while it sends
    with broker_environment(broker) as env:
        figures = run(pg_url, BROKERS[broker][1], env["JOURNEY_NAMESPACE"], tmp_path, sends=300, kills=3, threads=4, timeout=300)
    # Then no event is lost, no message arrives twice, every delivery is sent or unknown,
    # and each kill left at most one unknown per worker thread
    assert figures.problems() == [], "\n".join(figures.lines())


def test_unknown_deliveries_resent_from_the_command_line_reach_the_smtp_server(
    pg_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    # Given the unknown deliveries that kills left
    resolved: dict[str, object] = {}

    def resend_them(engine: Running) -> None:
        def journey(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "engine", *args], env=engine.env, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        unknown = json.loads(journey("deliveries", "unknown", "--json"))
        # When an operator resends them all
        journey("deliveries", "resend", "--all")
        engine.wait(lambda: engine.by_status().get("unknown", 0) == 0
                    and engine.by_status().get("sent", 0) == figures_sends, "resent deliveries sent")
        resolved["unknown"] = len(unknown)
        resolved["copies"] = Counter(str(m["Message-ID"]) for m in engine.smtp.mailbox.messages)

    figures_sends = 200
    figures: Figures = run(pg_url, REDIS_URL, redis_namespace, tmp_path, sends=figures_sends, kills=2, threads=4,
                           timeout=300, then=resend_them)
    assert resolved["unknown"] == figures.deliveries.get("unknown", 0) > 0, "no unknown delivery; proved nothing"
    # Then every customer got their email: each delivery is sent, and each message arrived
    # (a resent one may arrive a second time: that is what "unknown" meant)
    copies: Counter[str] = resolved["copies"]  # type: ignore[assignment]
    assert len(copies) == figures_sends
