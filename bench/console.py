"""Console speed: every list page of the operator console over HTTP, on 1M deliveries in PostgreSQL.

Fills a fresh PostgreSQL schema, set-wise in the database (``INSERT ... SELECT
generate_series``): the shipped journeys (``journeys/``) deployed, N deliveries (default
1M) spread over 90 days with ids in time order, each from a send step of its journey, in
a mix of statuses (85% sent, 4% held, 3% failed, 2% pending, 2% dead, the rest dropped,
unknown, claimed or sending) and their channels; their enrollments (two deliveries each)
and customers (N / 10); some failed events and audit entries. VACUUM ANALYZE, as
autovacuum would. Then starts a real ``journey serve`` on that schema, signs in at
``/console/login`` with an admin key, and times, in the same run:

- the baseline: ``SELECT count(*) FROM deliveries`` (one round trip, no HTTP);
- each console page: the overview; deliveries (first page, a deep page by cursor, and
  each filter: status, channel, journey, a day's time range, the last 24 hours, the last
  30 days); one delivery; failed events; journeys; one journey (its stats over 30 days);
  a customer; experiments; audit.

    python bench/console.py [--database-url URL] [--deliveries 1000000] [--repeat 7] [--keep | --schema KEPT]

Needs PostgreSQL (``--database-url``, else ``BENCH_DATABASE_URL``, else
``TEST_DATABASE_URL``, default the local ``test`` database) and Redis for ``journey serve``
(``TEST_REDIS_URL``); the schema is dropped afterwards. Prints the median of ``--repeat``
runs of each in ms, and a last line ``console: slowest page P ms (name); baseline B ms``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine import deploy, keys  # noqa: E402
from engine.demo import wait_for_http  # noqa: E402
from engine.storage.db import upgrade  # noqa: E402

PG_URL = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The newest delivery's time: the fill runs back 90 days from here.
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
TARGET_MS = 300

# The send steps of the shipped journeys: (journey number, its k-th send, its sends, journey, step, channel).
_SENDS = """
CREATE TEMP TABLE sends AS
SELECT j.n AS jn, s.k, count(*) OVER (PARTITION BY j.n) AS total, j.journey, s.step, s.channel
FROM (VALUES (0, 'welcome_series'), (1, 'cart_abandonment'), (2, 'order_followup'), (3, 'loyalty_points'),
             (4, 'nps_survey'), (5, 'winback'), (6, 'referral_rewards')) AS j(n, journey)
JOIN (VALUES ('welcome_series', 0, 'welcome', 'email'), ('welcome_series', 1, 'tips', 'email'),
             ('welcome_series', 2, 'push_nudge', 'push'), ('welcome_series', 3, 'email_nudge', 'email'),
             ('cart_abandonment', 0, 'reminder', 'email'), ('cart_abandonment', 1, 'discount', 'email'),
             ('cart_abandonment', 2, 'retarget', 'retargeting'), ('cart_abandonment', 3, 'leave_audience', 'retargeting'),
             ('order_followup', 0, 'thank_you', 'email'), ('order_followup', 1, 'review_request', 'email'),
             ('loyalty_points', 0, 'tier_notice', 'email'),
             ('nps_survey', 0, 'survey', 'email'), ('nps_survey', 1, 'referral_ask', 'email'), ('nps_survey', 2, 'detractor', 'webhook'),
             ('winback', 0, 'offer', 'email'),
             ('referral_rewards', 0, 'thanks', 'email')) AS s(journey, k, step, channel) ON s.journey = j.journey
"""

# Delivery d belongs to enrollment (d + 1) / 2 of customer e % C; ids follow time, 90 days back from NOW.
_PLAN = """
CREATE TEMP TABLE plan AS
SELECT p.d, p.e, p.c, p.at, p.r, s.journey, s.step, s.channel,
       CASE WHEN p.r < 850 THEN 'sent' WHEN p.r < 890 THEN 'held' WHEN p.r < 920 THEN 'failed'
            WHEN p.r < 940 THEN 'pending' WHEN p.r < 960 THEN 'dead' WHEN p.r < 985 THEN 'dropped'
            WHEN p.r < 995 THEN 'unknown' WHEN p.r < 998 THEN 'claimed' ELSE 'sending' END AS status
FROM (SELECT g AS d, (g + 1) / 2 AS e, ((g + 1) / 2) % :customers + 1 AS c, (g::bigint * 7919) % 1000 AS r,
             CAST(:now AS timestamptz) - (:n - g) * (7776000.0 / :n) * INTERVAL '1 second' AS at
      FROM generate_series(1, :n) AS g) AS p
JOIN sends s ON s.jn = (p.e % 7) AND s.k = p.d % s.total
"""

_FILL = [
    """INSERT INTO customers (id, external_id, traits, timezone, stage, first_seen_at, last_seen_at, updated_at)
       SELECT g, 'user-' || g, jsonb_build_object('email', 'user-' || g || '@example.com', 'first_name', 'User ' || g,
                                                  'phone', '+4477009' || lpad((g % 100000)::text, 5, '0')),
              'Europe/London', (ARRAY['awareness', 'consideration', 'purchase', 'retention', 'advocacy'])[g % 5 + 1],
              CAST(:now AS timestamptz) - INTERVAL '120 days', CAST(:now AS timestamptz) - (g % 90) * INTERVAL '1 day', CAST(:now AS timestamptz)
       FROM generate_series(1, :customers) AS g""",
    """INSERT INTO enrollments (id, journey_id, version, customer_id, status, step, state, started_at, updated_at, ended_at)
       SELECT 'en-' || e, min(journey), 1, min(c),
              CASE WHEN e % 10 = 0 THEN 'active' WHEN e % 10 < 4 THEN 'converted' ELSE 'completed' END,
              CASE WHEN e % 10 = 0 THEN min(step) END, '{}', min(at), max(at), CASE WHEN e % 10 <> 0 THEN max(at) END
       FROM plan GROUP BY e""",
    """INSERT INTO deliveries (id, key, enrollment_id, customer_id, journey_id, version, step, channel, template, kind,
                              content, variables, status, attempts, error, created_at, enqueued_at, updated_at, sent_at,
                              dropped_at, dropped_by)
       SELECT d, 'en-' || e || ':' || step || ':' || d, 'en-' || e, c, journey, 1, step, channel,
              CASE WHEN channel = 'email' THEN step END, 'marketing', '{}', '{}', status,
              CASE WHEN status IN ('dead', 'failed') THEN 3 WHEN status IN ('pending', 'held') THEN 0 ELSE 1 END,
              CASE status WHEN 'dead' THEN 'cannot reach smtp://mail.shop.example:587: connection refused'
                          WHEN 'failed' THEN '550 5.1.1 mailbox unavailable'
                          WHEN 'held' THEN (ARRAY['frequency cap: 3 per 7d', 'quiet hours', 'suppressed: hard_bounce'])[d % 3 + 1]
                          WHEN 'unknown' THEN 'worker stopped while sending' END,
              at, at, at + INTERVAL '2 seconds', CASE WHEN status = 'sent' THEN at + INTERVAL '2 seconds' END,
              CASE WHEN status = 'dropped' THEN at + INTERVAL '1 day' END,
              CASE WHEN status = 'dropped' THEN 'cli:ops' END
       FROM plan""",
    "SELECT setval(pg_get_serial_sequence('deliveries', 'id'), :n)",
    """INSERT INTO events (source, message_id, type, event, user_id, properties, traits, context, integrations,
                          timestamp, received_at, customer_id, attempts, error, processed_at, enqueued_at)
       SELECT 'shop', 'm-' || g, 'track', (ARRAY['order_completed', 'checkout_started', 'product_viewed'])[g % 3 + 1],
              'user-' || (g % :customers + 1), '{"order_id": "o-1"}', '{}', '{}', '{}',
              CAST(:now AS timestamptz) - g * INTERVAL '1 minute', CAST(:now AS timestamptz) - g * INTERVAL '1 minute', g % :customers + 1,
              CASE WHEN g % 4 = 0 THEN 8 ELSE 2 END, 'journey cart_abandonment step big_cart: no such property cart_value',
              NULL, CAST(:now AS timestamptz) - g * INTERVAL '1 minute'
       FROM generate_series(1, 5000) AS g""",
    """INSERT INTO audit_log (at, actor, action, selection, acted, finished_at)
       SELECT CAST(:now AS timestamptz) - g * INTERVAL '1 hour', 'cli:ops', (ARRAY['deliveries.retry', 'deliveries.drop', 'events.retry'])[g % 3 + 1],
              '{"filter": {"status": "dead"}}', g % 50, CAST(:now AS timestamptz) - g * INTERVAL '1 hour'
       FROM generate_series(1, 2000) AS g""",
]


def fill(url: str, n: int) -> None:
    """Deploy the shipped journeys and store ``n`` deliveries with their enrollments and customers."""
    engine = sa.create_engine(url)
    upgrade(engine)
    with Session(engine) as session, session.begin():
        deploy.deploy(session, [deploy.snapshot(path) for path in sorted((ROOT / "journeys").glob("*.yaml"))],
                      NOW - dt.timedelta(days=120))
    values = {"n": n, "customers": max(n // 10, 1), "now": NOW.isoformat()}
    with engine.begin() as connection:
        connection.execute(sa.text(_SENDS))
        connection.execute(sa.text(_PLAN), values)
        for statement in _FILL:
            connection.execute(sa.text(statement), values)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def admin_key(url: str) -> str:
    """A new admin key on the bench's database (shown once, as ``journey keys create --admin`` would)."""
    engine = sa.create_engine(url)
    with Session(engine) as session, session.begin():
        _, key = keys.create_key(session, "bench-console", scope="admin")
    engine.dispose()
    return key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign_in(client: httpx.Client, key: str) -> None:
    """Sign in at ``/console/login`` as a browser does: the form's hidden fields (its token), then the key."""
    form = client.get("/console/login")
    form.raise_for_status()
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.text))
    answer = client.post("/console/login", data={**hidden, "key": key}, headers={"Origin": str(client.base_url).rstrip("/")})
    if answer.status_code >= 400 or "/console/login" in str(answer.url):
        raise SystemExit(f"bench: signing in at /console/login failed ({answer.status_code}): {answer.text[:300]}")


def median_ms(work: Callable[[], object], repeat: int) -> float:
    """The median of ``repeat`` runs of ``work()``, in ms, after one warm-up run."""
    work()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def fetch(client: httpx.Client, path: str) -> Callable[[], object]:
    """Get ``path`` as the signed-in operator; fail on any answer but 200."""
    return lambda: client.get(path).raise_for_status()


def pages(n: int) -> list[tuple[str, str]]:
    """The console pages to time: (name, path)."""
    day = NOW - dt.timedelta(days=30)
    since, until = quote(day.isoformat()), quote((day + dt.timedelta(days=1)).isoformat())
    deep = n * 9 // 10
    return [
        ("overview", "/console"),
        ("deliveries", "/console/deliveries"),
        ("deliveries deep (cursor)", f"/console/deliveries?cursor={deep}"),
        ("deliveries status=dead", "/console/deliveries?status=dead"),
        ("deliveries status=dead deep", f"/console/deliveries?status=dead&cursor={deep}"),
        ("deliveries channel=push", "/console/deliveries?channel=push"),
        ("deliveries channel=webhook deep", f"/console/deliveries?channel=webhook&cursor={deep}"),
        ("deliveries journey=winback", "/console/deliveries?journey=winback"),
        ("deliveries one day", f"/console/deliveries?since={since}&until={until}"),
        ("deliveries last 24 hours", f"/console/deliveries?since={quote((NOW - dt.timedelta(days=1)).isoformat())}"),
        ("deliveries last 30 days", f"/console/deliveries?since={quote((NOW - dt.timedelta(days=30)).isoformat())}"),
        ("deliveries dead, email, one day", f"/console/deliveries?status=dead&channel=email&since={since}&until={until}"),
        ("delivery", f"/console/deliveries/{deep}"),
        ("failed events", "/console/events"),
        ("journeys", "/console/journeys"),
        ("journey", "/console/journeys/cart_abandonment"),
        ("customer", "/console/customers?q=user-42"),
        ("experiments", "/console/experiments"),
        ("audit", "/console/audit"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=PG_URL)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the schema (its name is printed), e.g. to EXPLAIN a slow page")
    parser.add_argument("--schema", help="time the pages on this kept schema again (no fill; it is kept)")
    args = parser.parse_args()
    schema = args.schema or f"bench_{uuid.uuid4().hex[:10]}"
    args.keep = args.keep or bool(args.schema)
    admin = sa.create_engine(args.database_url, isolation_level="AUTOCOMMIT")
    if not args.schema:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{args.database_url}{'&' if '?' in args.database_url else '?'}options={quote(f'-csearch_path={schema}')}"
    server: subprocess.Popen[bytes] | None = None
    try:
        if not args.schema:
            began = time.perf_counter()
            fill(url, args.deliveries)
            print(f"filled {args.deliveries:,} deliveries in {time.perf_counter() - began:.0f}s")
        key = admin_key(url)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": REDIS_URL, "JOURNEY_NAMESPACE": schema,
               "JOURNEY_SECRET": "bench-console-secret-" + "s" * 32, "LOG_LEVEL": "ERROR"}
        server = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL)
        wait_for_http(f"http://127.0.0.1:{port}/health", server, timeout=120)
        engine = sa.create_engine(url)

        def count() -> int:
            with engine.connect() as connection:
                return int(connection.exec_driver_sql("SELECT count(*) FROM deliveries").scalar_one())

        baseline = median_ms(count, args.repeat)
        print(f"baseline: SELECT count(*) FROM deliveries ({count():,} rows): {baseline:.0f} ms")
        figures: list[tuple[float, str]] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, follow_redirects=True) as client:
            sign_in(client, key)
            for name, path in pages(args.deliveries):
                answer = client.get(path)
                if answer.status_code != 200:
                    print(f"{name:34} {path}: HTTP {answer.status_code}, not timed")
                    continue
                took = median_ms(fetch(client, path), args.repeat)
                figures.append((took, name))
                print(f"{name:34} {took:7.0f} ms  ({len(answer.content) // 1024} KB){'  SLOW' if took > TARGET_MS else ''}")
        engine.dispose()
        if figures:
            slowest, name = max(figures)
            print(f"console: slowest page {slowest:.0f} ms ({name}); baseline {baseline:.0f} ms")
        else:
            print(f"console: no page answered; baseline {baseline:.0f} ms")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if args.keep:
            print(f"kept schema {schema}")
        else:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    main()
