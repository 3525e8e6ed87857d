"""Replay throughput: stored events/s through ``journey replay``'s two twins, on PostgreSQL.

Fills a fresh PostgreSQL schema with N events over a window, one week unless ``--days``
says otherwise (bulk inserts: one identify, product views, a checkout and, for half the
customers, an order, ten events a customer), deploys the shipped journeys, then
measures in the same run:

- the baseline: the same rows read with a plain streamed SELECT (a server-side cursor);
- the replay: :func:`engine.replay.replay` over the window, the shipped journeys as both
  the deployed and the changed set (two twins, every event through each; two processes
  unless ``--one-process``).

    python bench/replay.py [--events 10000] [--days 7] [--one-process]

A week of 1M events has 10,000 events every 0.07 days: ``--events 20000 --days 0.14`` is
that density (the reminders an hour on fire; the 24-hour and 7-day waits fall past the
end). Needs PostgreSQL (TEST_DATABASE_URL, default the local `test` database); the schema
is dropped afterwards. Prints events/s of each, the CPU seconds of all processes, and the
peak memory of this process and of the larger twin process. Figures: docs/runtime.md,
"Replay on stored history", Speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine import deploy  # noqa: E402
from engine.definitions import load_journeys  # noqa: E402
from engine.replay import replay  # noqa: E402
from engine.storage.db import upgrade  # noqa: E402
from engine.storage.models import Event  # noqa: E402

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WEEK = dt.timedelta(days=7)
PER_CUSTOMER = 10
INSERT_CHUNK = 5000


def customer_events(n: int, start: dt.datetime, window: dt.timedelta = WEEK) -> list[dict[str, object]]:
    """Customer ``n``'s ten events, the first in the window's first 6/7 (every row has the same keys: one executemany)."""
    user, at = f"user-{n}", start + dt.timedelta(seconds=(n * 7919) % int(window.total_seconds() * 6 / 7))
    base: dict[str, object] = {"source": "bench", "user_id": user, "context": {}, "integrations": {}, "traits": {}, "properties": {},
            "event": None, "name": None, "received_at": at, "processed_at": at}
    rows: list[dict[str, object]] = [{**base, "type": "identify", "message_id": f"{user}-0", "timestamp": at,
             "traits": {"email": f"{user}@example.com", "first_name": "Bench", "timezone": "Europe/Berlin"}}]
    for i in range(1, PER_CUSTOMER - 2):
        rows.append({**base, "type": "track", "event": "product_viewed", "message_id": f"{user}-{i}",
                     "timestamp": at + dt.timedelta(minutes=i), "properties": {"sku": f"sku-{i}"}})
    checkout = at + dt.timedelta(minutes=PER_CUSTOMER)
    props = {"cart_value": 50 + n % 300, "order_id": f"o-{n}", "currency": "EUR", "item_count": 2}
    rows.append({**base, "type": "track", "event": "checkout_started", "message_id": f"{user}-c",
                 "timestamp": checkout, "properties": props})
    if n % 2:
        rows.append({**base, "type": "track", "event": "order_completed", "message_id": f"{user}-o",
                     "timestamp": checkout + dt.timedelta(minutes=30 + n % 120),
                     "properties": {"order_id": f"o-{n}", "total": props["cart_value"], "currency": "EUR", "item_count": 2}})
    else:
        rows.append({**base, "type": "page", "name": "home", "message_id": f"{user}-p",
                     "timestamp": checkout + dt.timedelta(minutes=5)})
    return rows


def fill(url: str, events: int, start: dt.datetime, window: dt.timedelta = WEEK) -> int:
    """Store ``events`` events (rounded to whole customers) and deploy the shipped journeys; return how many."""
    engine = sa.create_engine(url)
    upgrade(engine)
    stored = 0
    with engine.begin() as connection:
        batch: list[dict[str, object]] = []
        for n in range(max(1, events // PER_CUSTOMER)):
            batch += customer_events(n, start, window)
            if len(batch) >= INSERT_CHUNK:
                connection.execute(sa.insert(Event), batch)
                stored, batch = stored + len(batch), []
        if batch:
            connection.execute(sa.insert(Event), batch)
            stored += len(batch)
    from sqlalchemy.orm import Session

    with Session(engine) as session, session.begin():
        deploy.deploy(session, [deploy.snapshot(p) for p in sorted((ROOT / "journeys").glob("*.yaml"))], start)
    engine.dispose()
    return stored


def baseline(url: str, start: dt.datetime, end: dt.datetime) -> int:
    """Read the window's rows with a plain streamed SELECT; return how many."""
    engine = sa.create_engine(url)
    count = 0
    with engine.connect() as connection:
        query = (sa.select(Event).where(Event.timestamp >= start, Event.timestamp < end)
                 .order_by(Event.timestamp, Event.id).execution_options(yield_per=2000))
        for _ in connection.execute(query):
            count += 1
    engine.dispose()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=7.0,
                        help="the window's length: fewer days, the events closer together (1M a week: --days 0.07 per 10,000)")
    parser.add_argument("--one-process", action="store_true", help="run the two twins one after the other, here")
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
    start = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=args.days)
    try:
        began = time.perf_counter()
        stored = fill(url, args.events, start, end - start)
        print(f"filled {stored} events in {time.perf_counter() - began:.1f}s")
        began = time.perf_counter()
        read = baseline(url, start, end)
        plain = time.perf_counter() - began
        print(f"baseline: streamed SELECT of {read} rows in {plain:.2f}s = {read / plain:,.0f} events/s")
        journeys = load_journeys(sorted((ROOT / "journeys").glob("*.yaml"))).journeys.values()
        began, cpu = time.perf_counter(), os.times()
        with tempfile.TemporaryDirectory() as directory:
            result = replay(url, journeys, start, end, directory=Path(directory), parallel=not args.one_process)
        took, after = time.perf_counter() - began, os.times()
        # CPU seconds, of this process and of the twins' processes: on a shared machine the
        # wall time also counts the waits for a core.
        used = sum(after[:4]) - sum(cpu[:4])
        print(f"replay: {result.events} events through two twins in {took:.1f}s = {result.events / took:,.0f} events/s "
              f"({plain / took:.3f} of the baseline's speed); "
              f"{sum(result.deployed.sent.values())} sends, {sum(result.deployed.held.values())} held")
        print(f"cpu: {used:.1f}s (both twins, every process) = {2 * result.events / used:,.0f} event-twins per CPU-second")
        own, twins = (resource.getrusage(who).ru_maxrss / 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        print(f"peak memory: {own:,.0f} MiB in this process, {twins:,.0f} MiB in the largest twin process; "
              f"a week of 1M events at this rate: {1_000_000 / (result.events / took) / 60:.0f} min")
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    main()
