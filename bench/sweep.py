"""The sweeper on a long backlog: duplicate messages it creates (must be 0) and the time per sweep.

A backlog of events (and optionally due timers and deliveries) is stored and enqueued on
Redis the way the engine does it, with no worker taking it. Then the scheduler sweeps it
``--sweeps`` times with a ``now`` past ``JOURNEY_SWEEP_AFTER``: every row is older than
the threshold, and every row is still on its queue, so no sweep may enqueue anything.
Then the Redis keys are deleted (every message lost) and the scheduler sweeps until it
finds nothing more: it must enqueue every row exactly once.

In the same run, the baseline: a plain ``SELECT count(*)`` of the pending rows, the least
a sweep of the database has to read.

    python bench/sweep.py [--events 100000] [--timers 0] [--deliveries 0] [--sweeps 5]

Needs PostgreSQL (TEST_DATABASE_URL, default the local `test` database; a fresh schema is
created and dropped) and Redis (TEST_REDIS_URL; a fresh namespace, deleted afterwards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine.scheduler import Scheduler  # noqa: E402
from engine.services import Services  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage.db import upgrade  # noqa: E402
from tests.backlog import build_backlog, message_count, times_carried  # noqa: E402

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")
PENDING = """
SELECT (SELECT count(*) FROM events WHERE processed_at IS NULL)
     + (SELECT count(*) FROM timers WHERE fired_at IS NULL)
     + (SELECT count(*) FROM deliveries WHERE status = 'pending')
"""


def timed(run: Callable[[], T]) -> tuple[float, T]:
    """Call ``run``; return the seconds it took and its result."""
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    """Build the backlog, sweep it, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--timers", type=int, default=0)
    parser.add_argument("--deliveries", type=int, default=0)
    parser.add_argument("--sweeps", type=int, default=5)
    args = parser.parse_args()

    schema, namespace = f"bench_{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
    services = Services.from_settings(Settings(database_url=database_url, redis_url=REDIS_URL, namespace=namespace))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        upgrade(services.engine)
        at = datetime.now(timezone.utc)
        built, _ = timed(lambda: build_backlog(services, at, args.events, args.timers, args.deliveries))
        with services.engine.connect() as connection:
            connection.execute(sa.text("ANALYZE"))
        rows = args.events + args.timers + args.deliveries
        print(f"backlog: {rows:,} rows ({args.events:,} events, {args.timers:,} timers, {args.deliveries:,} deliveries), "
              f"{message_count(services.broker):,} messages, built in {built:.1f}s")
        now = at + services.settings.sweep_after + timedelta(hours=1)

        with services.engine.connect() as connection:
            baseline = [timed(lambda: connection.execute(sa.text(PENDING)).scalar_one())[0] for _ in range(args.sweeps)]
        scheduler = Scheduler(services)
        before = message_count(services.broker)
        queued = [timed(lambda: scheduler.sweep(now)) for _ in range(args.sweeps)]
        duplicates = message_count(services.broker) - before
        print(f"queued backlog, {args.sweeps} sweeps: {duplicates} duplicate messages, "
              f"{sum(n for _, n in queued)} rows enqueued again (both must be 0)")
        print(f"  time per sweep: median {statistics.median(t for t, _ in queued) * 1000:.0f} ms, "
              f"max {max(t for t, _ in queued) * 1000:.0f} ms; "
              f"baseline SELECT count(*): median {statistics.median(baseline) * 1000:.1f} ms")

        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        lost: list[tuple[float, int]] = []
        while not lost or lost[-1][1]:
            lost.append(timed(lambda: scheduler.sweep(now)))
        once = times_carried(services)
        print(f"lost backlog: {sum(n for _, n in lost):,} rows enqueued in {len(lost) - 1} sweeps, "
              f"median {statistics.median(t for t, _ in lost[:-1]) * 1000:.0f} ms per sweep; "
              f"carried exactly once: {sum(n for (_, times), n in once.items() if times == 1):,} of {rows:,}")
    finally:
        services.close()
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
