"""A channel's rate limit holds across worker processes sharing Redis, whatever their clocks."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 3
#: Each process's clock is this far off (seconds): an hour behind to an hour ahead.
SKEWS = (-3600.0, -7.0, 0.0, 3600.0)
#: Grant times travel as floats of seconds: good to a microsecond either way.
ROUNDING_US = 2


def server_us(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


def hammer(namespace: str, rate: float, burst: float) -> tuple[list[int], int]:
    """Run one hammering process per skew at once; return every grant's time and the refusals."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.ratelimit_hammer",
             REDIS_URL, namespace, "email", str(rate), str(burst), str(SECONDS), str(skew)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for skew in SKEWS
    ]
    try:
        # All start together, once every one has imported and connected
        for process in processes:
            assert process.stdout is not None and process.stdin is not None
            assert process.stdout.readline().strip() == "ready", "a hammer process died at start (see stderr)"
        for process in processes:
            process.stdin.write("go\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        reports = [json.loads(process.communicate(timeout=60)[0]) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    granted = sorted(at for report in reports for at in report["granted"])
    return granted, sum(report["refused"] for report in reports)


def worst_window(granted: list[int], rate: float, burst: float) -> tuple[Fraction, int, int]:
    """The largest excess, over every stretch between two grants, of grants over the allowance.

    Over ``t`` seconds a limit grants at most ``rate * t + burst`` sends. Returns the
    excess (<= 0 when the limit held) and the stretch it was found in, in microseconds.
    """
    worst = (Fraction(-10**9), 0, 0)
    for i, first in enumerate(granted):
        for j in range(i, len(granted)):
            span = Fraction(granted[j] - first + ROUNDING_US, 1_000_000)
            excess = (j - i + 1) - (Fraction(rate) * span + Fraction(burst))
            worst = max(worst, (excess, first, granted[j]))
    return worst


@pytest.mark.parametrize(("rate", "burst"), [(25.0, 5.0), (7.5, 2.5)])
def test_processes_hammering_one_channel_never_get_more_than_its_allowance(redis_namespace, rate, burst):
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # Given four processes, their clocks up to an hour apart, limited to one channel's rate
        start = server_us(client)
        # When they ask for sends on it as fast as they can for a few seconds
        granted, refused = hammer(redis_namespace, rate, burst)
        end = server_us(client)
    finally:
        client.close()

    # Then the limit was reached: more was asked than granted
    assert refused > 0
    # and the first sends, on a channel at rest, went: at least the burst
    assert len(granted) >= int(burst)
    # and every grant was decided on the Redis server's clock, not on a process's own
    assert start - ROUNDING_US <= granted[0] and granted[-1] <= end + ROUNDING_US, (
        f"grants from {granted[0]} to {granted[-1]} fall outside the run, {start} to {end} (µs, Redis time): "
        "the limiter read a process's own clock"
    )
    # and over every stretch of the run, no more went than rate * seconds + burst
    excess, first, last = worst_window(granted, rate, burst)
    assert excess <= 0, (
        f"{excess} sends too many between {first} and {last} (µs, Redis time): "
        f"{len(granted)} granted in all, {refused} refused"
    )
