"""One worker of the rate-limit integration test: ask for sends as fast as it can.

Run as ``python -m tests.integration.ratelimit_hammer REDIS_URL NAMESPACE CHANNEL RATE
BURST SECONDS SKEW``. It builds the limiter the engine builds, with this process's clock
set ``SKEW`` seconds off (as on a machine whose clock is wrong), prints ``ready``, waits
for a line on stdin, asks for sends until ``SECONDS`` of the Redis server's time have
passed, and prints one JSON line: the server time of each grant in microseconds (to
within one: the ticket's time is a float of seconds), and how many requests were refused.
"""

from __future__ import annotations

import json
import sys
import time

import redis

from engine.ratelimit import build_limiter
from engine.settings import RateLimit, Settings


def skew_clocks(seconds: float) -> None:
    """Put this process's wall and monotonic clocks ``seconds`` off."""
    for name in ("time", "monotonic"):
        real = getattr(time, name)
        setattr(time, name, lambda real=real: real() + seconds)
    for name in ("time_ns", "monotonic_ns"):
        real_ns = getattr(time, name)
        setattr(time, name, lambda real_ns=real_ns: real_ns() + int(seconds * 1e9))


def server_us(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1_000_000 + micros


def main(argv: list[str]) -> None:
    url, namespace, channel, rate, burst, seconds, skew = argv
    skew_clocks(float(skew))
    client = redis.Redis.from_url(url)
    settings = Settings(redis_url=url, namespace=namespace, rate_limits={channel: RateLimit(float(rate), float(burst))})
    limiter = build_limiter(settings, client)
    print("ready", flush=True)
    sys.stdin.readline()
    end = server_us(client) + int(float(seconds) * 1_000_000)
    # perf_counter is not skewed: it ends the run even if ticket times were not the server's
    give_up = time.perf_counter() + 3 * float(seconds)
    granted: list[int] = []
    refused = 0
    while True:
        ticket = limiter.ticket(channel)
        assert ticket.at is not None
        at = round(ticket.at * 1_000_000)
        if ticket.granted:
            granted.append(at)
        else:
            refused += 1
        if at >= end or time.perf_counter() > give_up:
            break
        if not ticket.granted:
            time.sleep(min(ticket.wait, 0.002))  # hammer, but leave the shared cores some air
    print(json.dumps({"granted": granted, "refused": refused}), flush=True)
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
