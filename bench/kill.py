"""Kill the worker while it sends email: what is lost, sent twice, dead or left unknown.

    python bench/kill.py [--sends 2000] [--kills 20] [--threads 4] [--broker redis|rabbitmq]

Starts ``journey serve``, ``journey worker`` and ``journey scheduler`` as subprocesses on
PostgreSQL and Redis (or RabbitMQ: ``BROKER_URL=amqp://...``), configured only by environment variables, with ``SMTP_URL``
pointing at an aiosmtpd server on loopback. Posts an identify (an email address) for
each of ``--sends`` customers, then one ``bench_order`` event each; a journey written
here sends one transactional email per event. While the emails go out, the worker's
whole process group is killed (SIGKILL) ``--kills`` times, each time after the new
worker has sent something, and started again. Then it waits until every delivery is
final and prints: events lost, messages the SMTP server received twice (by Message-ID),
deliveries by status, and the unknown deliveries of each kill (at most one per worker
thread is the target: only the sends really in flight).

Needs PostgreSQL (TEST_DATABASE_URL, default the local ``test`` database; a fresh
schema is created and dropped) and Redis (TEST_REDIS_URL) or RabbitMQ (TEST_RABBITMQ_URL),
under a fresh namespace, deleted afterwards. ``tests/integration/test_kill_worker.py`` runs
a small one on each.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from channels.email import message_id  # noqa: E402
from engine.demo import wait_for_http  # noqa: E402
from channels import registry  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.workers.actors import queue_names  # noqa: E402
from engine.workers.broker import NamespacedRabbitmqBroker, make_broker  # noqa: E402
from tests.integration.channels.peers import SmtpPeer, free_port_on, smtp_peer  # noqa: E402

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BROKERS = {"redis": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
           "rabbitmq": os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")}
SENDER = "Shop <shop@example.com>"
BATCH = 100
FINAL = ("sent", "unknown", "dead", "failed", "held")

JOURNEY = """\
id: kill_bench
name: Kill bench
stage: purchase
trigger:
  event: bench_order
entry: {reentry: always}
goal: {event: bench_never}
sample:
  events:
    bench_order:
      properties: {n: 1}
steps:
  - id: receipt
    send: {channel: email, kind: transactional, subject: "Order {{ trigger.properties.n }}",
           text: "Thanks for order {{ trigger.properties.n }}."}
"""


@dataclass
class Figures:
    """What a run measured."""

    sends: int
    kills: int
    threads: int
    events_lost: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    received: int = 0
    received_twice: int = 0
    unknown_received: int = 0  # unknown deliveries that did reach the SMTP server
    unknown_per_kill: list[int] = field(default_factory=list)
    unknown_unexplained: int = 0  # unknown deliveries whose send began after the last kill
    seconds: float = 0.0

    def problems(self) -> list[str]:
        """The targets this run missed (none: it passed)."""
        missed = []
        if self.kills != len(self.unknown_per_kill):
            missed.append(f"{len(self.unknown_per_kill)} kills made, {self.kills} asked")
        if self.events_lost:
            missed.append(f"{self.events_lost} events lost")
        if self.received_twice:
            missed.append(f"{self.received_twice} messages received twice")
        total = sum(self.deliveries.values())
        if total != self.sends:
            missed.append(f"{total} deliveries for {self.sends} sends")
        others = {s: n for s, n in self.deliveries.items() if s not in ("sent", "unknown")}
        if others:
            missed.append(f"deliveries neither sent nor unknown: {others}")
        worst = max(self.unknown_per_kill, default=0)
        if worst > self.threads:
            missed.append(f"a kill left {worst} unknown, more than one per worker thread ({self.threads})")
        if self.unknown_unexplained:
            missed.append(f"{self.unknown_unexplained} unknown deliveries began after the last kill")
        return missed

    def lines(self) -> list[str]:
        """The figures, for people."""
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.deliveries.items()))
        per_kill = " ".join(map(str, self.unknown_per_kill)) or "-"
        return [
            f"events lost                 {self.events_lost}",
            f"deliveries                  {statuses}",
            f"messages received           {self.received} ({self.received_twice} twice)",
            f"dead                        {self.deliveries.get('dead', 0)}",
            f"unknown                     {self.deliveries.get('unknown', 0)} "
            f"({self.unknown_received} of them did reach the SMTP server)",
            f"unknown per kill            {per_kill}",
            f"unknown per kill per thread max {max(self.unknown_per_kill, default=0) / self.threads:.2f} "
            f"({self.threads} threads)",
            f"seconds                     {self.seconds:.0f}",
        ]


class Processes:
    """The engine's processes, each in its own process group, their output in ``logs/NAME.log``."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: list[IO[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        output = (self.logs / f"{name}.log").open("wb")
        self._outputs.append(output)
        process = subprocess.Popen([sys.executable, "-m", "engine", *args], env=self.env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # a kill reaches its children
        self.running[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children: no chance to finish or acknowledge anything."""
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # a child left behind
            except ProcessLookupError:
                pass
        for output in self._outputs:
            output.close()


def engine_command(env: dict[str, str], *args: str) -> str:
    """Run ``journey ARGS`` to its end; its output."""
    done = subprocess.run([sys.executable, "-m", "engine", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"journey {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Running:
    """The engine still running after the figures were taken: for what a caller does next."""

    env: dict[str, str]
    smtp: SmtpPeer
    by_status: Callable[[], dict[str, int]]
    wait: Callable[[Callable[[], bool], str], None]


def run(database_url: str, broker_url: str, namespace: str, workdir: Path, *, sends: int, kills: int,
        threads: int, timeout: float = 600.0, say: Callable[[str], None] = lambda _: None,
        then: Callable[[Running], None] | None = None) -> Figures:
    """Run the engine's processes, kill the worker ``kills`` times during ``sends`` emails; the figures.

    ``broker_url`` is the processes' ``BROKER_URL``: Redis (``redis://``) or RabbitMQ
    (``amqp://``). ``then`` is called with the engine still running, once the figures are taken.
    """
    with contextlib.contextmanager(smtp_peer)() as smtp:
        return _run(database_url, broker_url, namespace, workdir, smtp, sends=sends, kills=kills, threads=threads,
                    timeout=timeout, say=say, then=then)


def _run(database_url: str, broker_url: str, namespace: str, workdir: Path, smtp: SmtpPeer, *, sends: int,
         kills: int, threads: int, timeout: float, say: Callable[[str], None],
         then: Callable[[Running], None] | None) -> Figures:
    journeys, logs = workdir / "journeys", workdir / "logs"
    journeys.mkdir(parents=True)
    logs.mkdir()
    (journeys / "kill_bench.yaml").write_text(JOURNEY)
    env = dict(
        {name: value for name, value in os.environ.items() if name != "REDIS_URL"},
        DATABASE_URL=database_url, BROKER_URL=broker_url, JOURNEY_NAMESPACE=namespace,
        JOURNEY_WORKER_PROCESSES="1", JOURNEY_WORKER_THREADS=str(threads),
        # short, so that abandoned sends are settled within seconds (unknown after 5 x 1s)
        JOURNEY_SWEEP_AFTER="1s", JOURNEY_SWEEP_INTERVAL="1s",
        SMTP_URL=f"smtp://{smtp.host}:{smtp.port}", EMAIL_FROM=SENDER, LOG_LEVEL="WARNING",
    )
    engine_command(env, "db", "upgrade")
    engine_command(env, "deploy", str(journeys))
    key = engine_command(env, "keys", "create", "kill-bench").strip()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    port = free_port_on("127.0.0.1")
    processes = Processes(env, logs)
    db = sa.create_engine(database_url)
    started = time.monotonic()

    def by_status() -> dict[str, int]:
        with db.connect() as connection:
            return dict(connection.execute(sa.text("SELECT status, count(*) FROM deliveries GROUP BY status")).all())

    def wait(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not after {timeout:.0f}s; deliveries {by_status()}; logs in {logs}")
            time.sleep(0.05)

    try:
        web = processes.start("web", "serve", "--port", str(port))
        processes.start("scheduler", "scheduler")
        wait_for_http(f"http://127.0.0.1:{port}/health", web)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=60) as client:
            post = _poster(client)
            # The addresses first, all applied, so that no order can overtake its customer's identify.
            post([{"type": "identify", "userId": f"c{i}", "traits": {"email": f"c{i}@example.com"},
                   "messageId": f"id-{i}"} for i in range(sends)])
            processes.start("worker-0", "worker")
            wait(lambda: _count(db, "SELECT count(*) FROM events WHERE processed_at IS NULL") == 0, "identifies")
            post([{"type": "track", "userId": f"c{i}", "event": "bench_order", "properties": {"n": i},
                   "messageId": f"order-{i}"} for i in range(sends)])
        say(f"posted {sends} orders; killing the worker {kills} times while it sends")
        kill_times: list[datetime] = []
        sent_at_restart = 0
        for n in range(1, kills + 1):
            threshold = n * sends // (kills + 1)
            # Each kill while the new worker is sending: it has sent something since it started.
            wait(lambda: (sent := by_status().get("sent", 0)) >= threshold and sent > sent_at_restart  # noqa: B023 - called in this iteration
                 or sum(by_status().get(s, 0) for s in FINAL) >= sends, f"kill {n}")
            if sum(by_status().get(s, 0) for s in FINAL) >= sends:
                say(f"every delivery was final before kill {n}")
                break
            processes.kill(f"worker-{n - 1}")
            # Once it is dead: a send that began between reading the clock and the signal
            # landing would otherwise look as if it began after the kill.
            kill_times.append(_database_now(db))
            sent_at_restart = by_status().get("sent", 0)
            processes.start(f"worker-{n}", "worker")
            say(f"kill {n}: {sent_at_restart} sent")
        wait(lambda: sum(by_status().get(s, 0) for s in FINAL) >= sends
             and _count(db, "SELECT count(*) FROM events WHERE processed_at IS NULL") == 0, "every delivery final")
        figures = _figures(db, smtp, sends, kills, threads, kill_times, time.monotonic() - started)
        if then is not None:
            then(Running(env, smtp, by_status, wait))
        return figures
    finally:
        processes.stop_all()
        db.dispose()


def _poster(client: httpx.Client) -> Callable[[list[dict[str, Any]]], None]:
    def post(items: list[dict[str, Any]]) -> None:
        for start in range(0, len(items), BATCH):
            response = client.post("/v1/batch", json={"batch": items[start : start + BATCH]})
            if response.status_code != 200:
                raise RuntimeError(f"the API answered {response.status_code}: {response.text}")

    return post


def _count(db: sa.Engine, query: str) -> int:
    with db.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


def _database_now(db: sa.Engine) -> datetime:
    with db.connect() as connection:
        return connection.execute(sa.text("SELECT now()")).scalar_one()


def _figures(db: sa.Engine, smtp: SmtpPeer, sends: int, kills: int, threads: int, kill_times: list[datetime],
             seconds: float) -> Figures:
    with db.connect() as connection:
        processed = connection.execute(sa.text(
            "SELECT count(*) FROM events WHERE message_id LIKE 'order-%' AND processed_at IS NOT NULL")).scalar_one()
        statuses: dict[str, int] = dict(connection.execute(sa.text("SELECT status, count(*) FROM deliveries GROUP BY status")).all())
        # updated_at of an unknown delivery: when its send began
        unknown = connection.execute(sa.text("SELECT key, updated_at FROM deliveries WHERE status = 'unknown'")).all()
    received = Counter(str(m["Message-ID"]) for m in smtp.mailbox.messages)
    domain = SENDER.rpartition("@")[2].rstrip(">")
    per_kill = [0] * len(kill_times)
    unexplained = 0
    for _, began in unknown:
        later = [i for i, at in enumerate(kill_times) if at >= began]
        if later:
            per_kill[later[0]] += 1
        else:
            unexplained += 1
    return Figures(
        sends=sends, kills=kills, threads=threads, events_lost=sends - int(processed), deliveries=statuses,
        received=len(received), received_twice=sum(1 for n in received.values() if n > 1),
        unknown_received=sum(1 for key, _ in unknown if message_id(key, domain) in received),
        unknown_per_kill=per_kill, unknown_unexplained=unexplained, seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--threads", type=int, default=4, help="threads of the worker's one process")
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis",
                        help="Redis at TEST_REDIS_URL or RabbitMQ at TEST_RABBITMQ_URL")
    args = parser.parse_args()

    schema, namespace = f"bench_{uuid.uuid4().hex[:8]}", f"bench-kill-{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
    print(f"kill bench: {args.sends} emails, {args.kills} kill -9 of journey worker (1 process, {args.threads} "
          f"threads) on {args.broker}; serve and scheduler running; {os.cpu_count()} cores", flush=True)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            figures = run(database_url, BROKERS[args.broker], namespace, Path(workdir), sends=args.sends,
                          kills=args.kills, threads=args.threads, say=lambda line: print(line, flush=True))
        print("\n".join(figures.lines()))
        problems = figures.problems()
        print("targets met" if not problems else "targets missed: " + "; ".join(problems))
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        clean_namespace(BROKERS[args.broker], namespace)


def clean_namespace(broker_url: str, namespace: str) -> None:
    """Delete what the run left on the broker: its Redis keys, or its RabbitMQ queues."""
    broker = make_broker(Settings(broker_url=broker_url, namespace=namespace))
    try:
        if isinstance(broker, NamespacedRabbitmqBroker):
            broker.delete_queues(queue_names(registry.available()))
        elif isinstance(broker, RedisBroker):
            for key in broker.client.scan_iter(f"{namespace}*"):
                broker.client.delete(key)
    finally:
        broker.close()


if __name__ == "__main__":
    main()

