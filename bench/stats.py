"""Journey stats speed: ``GET /v1/journeys/{id}/stats``'s query over 1M enrollments, on PostgreSQL.

Fills a fresh PostgreSQL schema, set-wise in the database (``INSERT ... SELECT
generate_series``), with N enrollments of a split journey (45% ``a``, 45% ``b``, 10%
holdout; a third of ``a`` and a tenth of ``b`` converted, the rest waiting; a tenth of the
holdout orders later), their trace rows (enter, choose, send, wait, end: about five per
enrollment), a delivery per treated customer, a signup event per customer and the orders;
recounts the journey counts from that trace (:func:`engine.counters.rebuild`, as the
workers would have kept them), runs VACUUM ANALYZE as autovacuum would, then measures in
the same run:

- the baseline: a plain ``SELECT count(*) FROM enrollments``;
- the stats: :func:`engine.analytics.journey_stats` for the whole cohort (every step,
  edge and variant from the counts; the waiting customers and the deliveries from indexes).

    python bench/stats.py [--enrollments 1000000] [--repeat 3]

Needs PostgreSQL (TEST_DATABASE_URL, default the local `test` database); the schema is
dropped afterwards. Prints the best of ``--repeat`` runs of each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine import analytics, counters, deploy  # noqa: E402
from engine.storage.db import upgrade  # noqa: E402

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

JOURNEY = """
id: experiment
name: Offer experiment
stage: consideration
trigger: {event: signed_up}
goal: {event: order_completed}
policy: {kind: transactional}
steps:
  - id: pick
    split:
      - {name: a, weight: 45, goto: offer_a}
      - {name: b, weight: 45, goto: offer_b}
      - {holdout: 10}
  - id: offer_a
    send: {channel: log, text: "15% off"}
    goto: wait_order
  - id: offer_b
    send: {channel: log, text: "free shipping"}
  - id: wait_order
    wait: 7d
"""

# One enrollment per customer g: its variant, whether it converted (in the journey, or
# as a holdout after it), when it started (spread over 30 days).
_ROWS = """
CREATE TEMP TABLE plan AS
SELECT g,
       CASE WHEN g % 20 < 9 THEN 'a' WHEN g % 20 < 18 THEN 'b' ELSE 'holdout' END AS variant,
       (g % 20 < 9 AND g % 3 = 0) OR (g % 20 BETWEEN 9 AND 17 AND g % 10 = 0) AS converted,
       g % 20 >= 18 AND g % 7 = 0 AS holdout_buys,
       TIMESTAMPTZ '2026-11-01 00:00+00' + (g % 2592000) * INTERVAL '1 second' AS at
FROM generate_series(1, :n) AS g
"""

_FILL = [
    """INSERT INTO customers (id, external_id, traits, first_seen_at, last_seen_at, updated_at, stage, stage_changed_at)
       SELECT g, 'user-' || g, jsonb_build_object('email', 'user-' || g || '@example.com'), at, at, at,
              'consideration', at FROM plan""",
    """INSERT INTO events (id, source, message_id, type, event, user_id, properties, traits, context, integrations,
                          timestamp, received_at, customer_id, processed_at, attempts)
       SELECT g, 'bench', 's-' || g, 'track', 'signed_up', 'user-' || g, '{"plan": "free"}', '{}', '{}', '{}',
              at, at, g, at, 1 FROM plan""",
    """INSERT INTO events (id, source, message_id, type, event, user_id, properties, traits, context, integrations,
                          timestamp, received_at, customer_id, processed_at, attempts)
       SELECT :n + g, 'bench', 'o-' || g, 'track', 'order_completed', 'user-' || g, '{"total": 40}', '{}', '{}', '{}',
              at + INTERVAL '2 days', at + INTERVAL '2 days', g, at + INTERVAL '2 days', 1
       FROM plan WHERE converted OR holdout_buys""",
    """INSERT INTO enrollments (id, journey_id, version, customer_id, status, step, waiting_event, state,
                               trigger_event_id, started_at, updated_at, ended_at, converted_at)
       SELECT 'e' || g, 'experiment', 1, g,
              CASE WHEN variant = 'holdout' THEN 'exited' WHEN converted THEN 'converted' ELSE 'active' END,
              CASE WHEN variant <> 'holdout' AND NOT converted THEN 'wait_order' END, NULL,
              jsonb_build_object('id', 'e' || g, 'journey_id', 'experiment', 'version', 1, 'customer_id', g::text,
                                 'variant', jsonb_build_object('pick', CASE WHEN variant = 'holdout' THEN 'control' ELSE variant END),
                                 'visits', jsonb_build_object('pick', 1),
                                 'trigger', jsonb_build_object('type', 'track', 'event', 'signed_up', 'userId', 'user-' || g,
                                                               'properties', jsonb_build_object('plan', 'free', 'source', 'web'))),
              g, at,
              CASE WHEN variant = 'holdout' THEN at WHEN converted THEN at + INTERVAL '2 days' ELSE at END,
              CASE WHEN variant = 'holdout' THEN at WHEN converted THEN at + INTERVAL '2 days' END,
              CASE WHEN holdout_buys THEN at + INTERVAL '2 days' END
       FROM plan""",
    """INSERT INTO trace (enrollment_id, at, step, what, detail, value)
       SELECT 'e' || g, at, NULL, 'enter', 'entered experiment (version 1)', '"signed_up"' FROM plan
       UNION ALL SELECT 'e' || g, at, 'pick', 'choose', 'split path ' || variant, to_jsonb(variant) FROM plan
       UNION ALL SELECT 'e' || g, at, 'pick', 'end', 'holdout', '"exited"' FROM plan WHERE variant = 'holdout'
       UNION ALL SELECT 'e' || g, at + INTERVAL '2 days', 'pick', 'converted', 'order_completed arrived after the enrollment ended',
                        '"order_completed"' FROM plan WHERE holdout_buys
       UNION ALL SELECT 'e' || g, at, 'offer_' || variant, 'run', 'send log', '"log"' FROM plan WHERE variant <> 'holdout'
       UNION ALL SELECT 'e' || g, at, 'wait_order', 'wait', 'until later', NULL FROM plan WHERE variant <> 'holdout'
       UNION ALL SELECT 'e' || g, at + INTERVAL '2 days', 'wait_order', 'goal', 'order_completed arrived', '"order_completed"'
                 FROM plan WHERE variant <> 'holdout' AND converted
       UNION ALL SELECT 'e' || g, at + INTERVAL '2 days', 'wait_order', 'end', 'goal:order_completed', '"converted"'
                 FROM plan WHERE variant <> 'holdout' AND converted""",
    """INSERT INTO deliveries (key, enrollment_id, customer_id, journey_id, version, step, channel, kind, content,
                              variables, status, attempts, created_at, updated_at, sent_at)
       SELECT 'e' || g || '\\:offer_' || variant || '\\:1', 'e' || g, g, 'experiment', 1, 'offer_' || variant, 'log',
              'transactional', '{"parts": ["text"]}', '{}', CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'sent' END, 1,
              at, at, at
       FROM plan WHERE variant <> 'holdout'""",
]


def fill(url: str, n: int) -> None:
    """Deploy the journey and store ``n`` enrollments with their trace, deliveries and events."""
    engine = sa.create_engine(url)
    upgrade(engine)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "experiment.yaml"
        path.write_text(JOURNEY)
        with Session(engine) as session, session.begin():
            deploy.deploy(session, [deploy.snapshot(path)], dt.datetime(2026, 10, 31, tzinfo=dt.timezone.utc))
    with engine.begin() as connection:
        connection.execute(sa.text(_ROWS), {"n": n})
        for statement in _FILL:
            connection.execute(sa.text(statement), {"n": n})
    # The counts the workers would have kept as they wrote that trace: recounted from it by
    # the same rule (what migration 0011 does for a database that predates them).
    with tempfile.TemporaryDirectory() as directory, Session(engine) as session, session.begin():
        definition = deploy.compile_version("experiment", 1, JOURNEY, {}, Path(directory))
        counters.rebuild(session, {("experiment", 1): definition})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def best(work, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """The fastest of ``repeat`` runs of ``work()`` and its result."""
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - began)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enrollments", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
    try:
        began = time.perf_counter()
        fill(url, args.enrollments)
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            trace_rows = connection.exec_driver_sql("SELECT count(*) FROM trace").scalar_one()
        print(f"filled {args.enrollments:,} enrollments ({trace_rows:,} trace rows) in {time.perf_counter() - began:.0f}s")
        with tempfile.TemporaryDirectory() as directory:
            definition = deploy.compile_version("experiment", 1, JOURNEY, {}, Path(directory))
        window = analytics.Window(dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc),
                                  dt.datetime(2026, 12, 31, tzinfo=dt.timezone.utc))
        now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)

        def count() -> int:
            with engine.connect() as connection:
                return int(connection.exec_driver_sql("SELECT count(*) FROM enrollments").scalar_one())

        def stats() -> dict[str, object]:
            with Session(engine) as session:
                return analytics.journey_stats(session, "experiment", {1: definition}, window, now)

        plain, counted = best(count, args.repeat)
        took, result = best(stats, args.repeat)
        variants = ", ".join(f"{v['variant']} {v['customers']:,}/{v['converted']:,} p={v['p_value']}"
                             for v in result["variants"])  # type: ignore[index]
        print(f"baseline: SELECT count(*) FROM enrollments ({counted:,} rows) in {plain * 1000:.0f} ms")
        print(f"stats: journey_stats over {result['entered']:,} enrollments in {took * 1000:.0f} ms "  # type: ignore[index]
              f"({took / plain:.1f}x the count); variants {variants}")
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    main()
