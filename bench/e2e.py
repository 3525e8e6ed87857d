"""End to end: events/s from ingestion to recorded delivery, on PostgreSQL and Redis.

Each event goes the whole way: POST /v1/batch (stored, enqueued), a worker process
applies it (profile, trigger match, enrollment, delivery row in the outbox), another
message carries the delivery, which is claimed, rendered, sent through the ``log``
channel and recorded ``sent``. The clock stops when the last delivery row is ``sent``.

In the same run, the baseline: a Dramatiq actor that does nothing (bench/noop.py) on the
same Redis, consumed by a real ``dramatiq`` worker with the same processes and threads.
The ratio of the two holds on a noisy machine.

    python bench/e2e.py [--events 20000] [--processes 2] [--threads 8] [--web-workers 2] [--rate EVENTS_PER_S]

Without ``--rate`` every batch is posted as fast as the server acknowledges it, so the
whole run is queued within a second and the latencies measure the backlog; with
``--rate`` below capacity they measure one event's way through.

Needs PostgreSQL (TEST_DATABASE_URL, default the local `test` database; a fresh schema is
created and dropped) and Redis (TEST_REDIS_URL; fresh namespaces, deleted afterwards).
The bench journey is bench/journeys/bench.yaml; no timers, so no scheduler runs.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import orjson
import redis
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingest import free_port, wait_for  # noqa: E402
from loadgen import post, run_load  # noqa: E402

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 100
WARM_UP = 2  # batches, before the clock starts: processes connected, the journey compiled

SENT = sa.text("SELECT count(*) FROM deliveries WHERE status = 'sent'")
# Per delivery of this run: event received (API) -> delivery recorded sent (worker).
TIMES = sa.text("""
    SELECT extract(epoch FROM e.received_at), extract(epoch FROM d.sent_at)
    FROM deliveries d JOIN enrollments n ON n.id = d.enrollment_id JOIN events e ON e.id = n.trigger_event_id
    WHERE d.status = 'sent' AND e.message_id LIKE :run
""")


def wait_until(probe: Callable[[], int], target: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    value = probe()
    while value < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: {value} of {target} after {timeout:.0f}s")
        time.sleep(0.02)
        value = probe()


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1]


def run_engine(args: argparse.Namespace, env: dict[str, str]) -> tuple[float, float, list[float]]:
    """Return (events/s end to end, seconds until the last batch was acknowledged, latencies)."""
    database_url = env["DATABASE_URL"]
    engine_cmd = [sys.executable, "-m", "engine"]
    subprocess.run([*engine_cmd, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*engine_cmd, "deploy", str(HERE / "journeys")], env=env, check=True, capture_output=True)
    key = subprocess.run([*engine_cmd, "keys", "create", "bench"], env=env, check=True, capture_output=True,
                         text=True).stdout.strip()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    port = free_port()
    processes = [
        subprocess.Popen([*engine_cmd, "serve", "--port", str(port), "--workers", str(args.web_workers)], env=env),
        subprocess.Popen([*engine_cmd, "worker", "--processes", str(args.processes), "--threads", str(args.threads)],
                         env=env),
    ]
    db = sa.create_engine(database_url)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", processes[0])

        def sent() -> int:
            with db.connect() as connection:
                return int(connection.execute(SENT).scalar_one())

        def batch(run: str, n: int) -> bytes:
            items = [
                {"type": "track", "userId": f"customer-{(n * BATCH + i) % args.customers}", "event": "bench_event",
                 "messageId": f"{run}-{n}-{i}", "properties": {"n": n * BATCH + i},
                 "timestamp": "2026-11-23T10:00:00Z"}
                for i in range(BATCH)
            ]
            return post("/v1/batch", orjson.dumps({"batch": items}), auth)

        run_load("127.0.0.1", port, lambda n: batch("warm", n), connections=1, seconds=60, requests=WARM_UP)
        wait_until(sent, WARM_UP * BATCH, 120, "warm-up deliveries sent")

        requests = args.events // BATCH
        started = time.time()
        pace = BATCH / args.rate if args.rate else None
        load = run_load("127.0.0.1", port, lambda n: batch("run", n), connections=args.connections, seconds=600,
                        requests=requests, pace=pace)
        acknowledged = time.time() - started
        if load.statuses != {200: requests}:
            raise SystemExit(f"the server answered {load.statuses}")
        wait_until(sent, WARM_UP * BATCH + requests * BATCH, 600, "deliveries sent")
        with db.connect() as connection:
            times = connection.execute(TIMES, {"run": "run-%"}).all()
        last = max(float(done) for _, done in times)
        latencies = [float(done) - float(received) for received, done in times]
        return len(times) / (last - started), acknowledged, latencies
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        db.dispose()


def run_baseline(args: argparse.Namespace, namespace: str) -> float:
    """Return messages/s of the no-op actor: enqueue ``--events`` messages, wait until all ran."""
    env = dict(os.environ, REDIS_URL=REDIS_URL, BENCH_NAMESPACE=namespace)
    os.environ.update(REDIS_URL=REDIS_URL, BENCH_NAMESPACE=namespace)
    import noop  # the same module the worker loads: its broker and actor

    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "noop", "--path", str(HERE), "--processes", str(args.processes),
         "--threads", str(args.threads)],
        env=env, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(REDIS_URL)
    try:
        def done() -> int:
            if worker.poll() is not None:
                raise SystemExit(f"the dramatiq worker exited with {worker.returncode}")
            return int(client.get(noop.COUNTER) or 0)

        for n in range(WARM_UP * BATCH):
            noop.noop.send(n)
        wait_until(done, WARM_UP * BATCH, 120, "warm-up messages")
        started = time.time()
        for n in range(args.events):
            noop.noop.send(n)
        wait_until(done, WARM_UP * BATCH + args.events, 600, "messages consumed")
        return args.events / (time.time() - started)
    finally:
        worker.terminate()
        worker.wait()
        client.close()
        noop.broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=5_000, help="userIds the events are spread over")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (engine and baseline)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4, help="concurrent HTTP clients posting batches")
    parser.add_argument("--rate", type=float, default=None,
                        help="post events at this rate (events/s) instead of as fast as the server answers: "
                             "the latency of a steady load below capacity")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    namespace, baseline_namespace = f"bench-{uuid.uuid4().hex[:8]}", f"bench-noop-{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=REDIS_URL, JOURNEY_NAMESPACE=namespace,
               LOG_LEVEL="WARNING")
    print(f"e2e bench: {args.events} events in batches of {BATCH} from {args.connections} connections, "
          f"{args.customers} customers{f', paced at {args.rate:.0f} events/s' if args.rate else ''}; "
          f"journey serve --workers {args.web_workers}, journey worker --processes "
          f"{args.processes} --threads {args.threads}; no scheduler (no timers); {os.cpu_count()} cores", flush=True)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        rate, acknowledged, latencies = run_engine(args, env)
        print(f"engine end to end     {rate:>8.0f} events/s   (last batch acknowledged after {acknowledged:.2f}s, "
              f"ingestion {args.events / acknowledged:.0f} events/s)", flush=True)
        print(f"received -> sent      p50 {percentile(latencies, 50) * 1000:8.0f} ms   "
              f"p99 {percentile(latencies, 99) * 1000:8.0f} ms   max {max(latencies) * 1000:8.0f} ms", flush=True)
        baseline = run_baseline(args, baseline_namespace)
        print(f"baseline no-op actor  {baseline:>8.0f} messages/s", flush=True)
        print(f"ratio engine/baseline {rate / baseline:>8.2f}", flush=True)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        for prefix in (namespace, baseline_namespace):
            for redis_key in client.scan_iter(f"{prefix}*"):
                client.delete(redis_key)
        client.close()


if __name__ == "__main__":
    main()
