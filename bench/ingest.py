"""Ingestion throughput: events/s through /v1/track and /v1/batch on PostgreSQL and Redis.

In the same run it measures a plain uvicorn endpoint that answers 202 without doing
anything, driven by the same load generator: the ratio to it holds on a noisy machine.

    python bench/ingest.py [--seconds 10] [--web-workers 2] [--connections 16 64]

Requests are committed in groups (see engine.ingest.EventWriter), so throughput grows
with the number of concurrent clients; the bench runs each level given.

Needs PostgreSQL (TEST_DATABASE_URL, default the local `test` database; a fresh schema
is created and dropped) and Redis (TEST_REDIS_URL). No worker runs: this measures
accepting events (validate, commit, enqueue), not processing them.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx
import orjson
import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LoadResult, post, run_load  # noqa: E402

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def plain_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The baseline: read the body, answer 202, do nothing else."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"application/json"), (b"content-length", b"16")]})
    await send({"type": "http.response.body", "body": b'{"success":true}'})


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def report(name: str, result: LoadResult, events_per_request: int, baseline: LoadResult | None) -> None:
    events = result.rate * events_per_request
    line = (
        f"{name:<30} {result.rate:>7.0f} req/s {events:>9.0f} events/s "
        f"p50 {result.percentile(50) * 1000:6.1f} ms  p99 {result.percentile(99) * 1000:6.1f} ms  statuses {result.statuses}"
    )
    if baseline is not None:
        line += f"  ratio {result.rate / baseline.rate:.2f}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64],
                        help="concurrent client connections; each level is run in turn")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=REDIS_URL, JOURNEY_NAMESPACE=namespace, LOG_LEVEL="WARNING")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([sys.executable, "-m", "engine", "db", "upgrade"], env=env, check=True, capture_output=True)
        key = subprocess.run(
            [sys.executable, "-m", "engine", "keys", "create", "bench"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}

        base_port, engine_port = free_port(), free_port()
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "ingest:plain_app", "--app-dir", str(Path(__file__).parent),
             "--port", str(base_port), "--workers", str(args.web_workers), "--log-level", "warning", "--no-access-log"],
            env=env,
        ))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--port", str(engine_port), "--workers", str(args.web_workers)], env=env
        ))
        wait_for(f"http://127.0.0.1:{base_port}/", processes[0])
        wait_for(f"http://127.0.0.1:{engine_port}/health", processes[1])

        run_id = [uuid.uuid4().hex[:8]]  # renewed per level, so no level repeats a messageId

        def track(n: int) -> bytes:
            body = orjson.dumps({
                "userId": f"user-{n % 5000}", "event": "Product Viewed", "messageId": f"{run_id[0]}-t-{n}",
                "properties": {"sku": f"SKU-{n % 977}", "price": 19.99}, "timestamp": "2026-11-23T10:00:00Z",
            })
            return post("/v1/track", body, auth)

        def batch(n: int) -> bytes:
            items = [
                {"type": "track", "userId": f"user-{(n * args.batch_size + i) % 5000}", "event": "Product Viewed",
                 "messageId": f"{run_id[0]}-b-{n}-{i}", "properties": {"sku": f"SKU-{i}", "price": 19.99},
                 "timestamp": "2026-11-23T10:00:00Z"}
                for i in range(args.batch_size)
            ]
            return post("/v1/batch", orjson.dumps({"batch": items, "sentAt": "2026-11-23T10:00:01Z"}), auth)

        print(f"ingest bench: PostgreSQL + Redis on loopback, {args.web_workers} server processes, "
              f"{args.seconds:.0f}s per run, {os.cpu_count()} cores", flush=True)
        acknowledged = 0
        for connections in args.connections:
            run_id[0] = uuid.uuid4().hex[:8]
            baseline = run_load("127.0.0.1", base_port, lambda n: post("/v1/track", b"{}", {}),
                                connections=connections, seconds=args.seconds)
            report(f"baseline 202, {connections} conns", baseline, 1, None)
            tracked = run_load("127.0.0.1", engine_port, track, connections=connections, seconds=args.seconds)
            report(f"/v1/track, {connections} conns", tracked, 1, baseline)
            batch_connections = max(2, connections // 4)
            batched = run_load("127.0.0.1", engine_port, batch, connections=batch_connections, seconds=args.seconds)
            report(f"/v1/batch x{args.batch_size}, {batch_connections} conns", batched, args.batch_size, baseline)
            acknowledged += tracked.statuses.get(200, 0) + batched.statuses.get(200, 0) * args.batch_size

        check = sa.create_engine(database_url)
        with check.connect() as connection:
            stored = connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        check.dispose()
        print(f"rows stored: {stored} (acknowledged: {acknowledged})", flush=True)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        client = redis.Redis.from_url(REDIS_URL)
        for redis_key in client.scan_iter(f"{namespace}*"):
            client.delete(redis_key)


if __name__ == "__main__":
    main()
