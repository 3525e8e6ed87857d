"""End to end: events/s from ``POST /v1/batch`` to a delivery recorded ``sent``, against a no-op drain.

The engine runs as its real processes, ``journey serve``, ``journey worker`` and
``journey scheduler``, configured only by environment variables (the caller's
environment is passed on, so the broker is whatever it names), on PostgreSQL and Redis,
with every channel pointed at a peer on loopback (aiosmtpd, and recording HTTP servers
for SMS, push, audiences and webhooks). What it measures, in one run:

- **e2e**: bench events (bench/journeys/bench.yaml: each enrolls and sends one ``log``
  message) posted as fast as the server acknowledges them; the clock runs from the first
  request to the last delivery's ``sent_at``. ``--rounds`` rounds, each right after a
- **baseline** drain: a queue of as many no-op messages (bench/noop.py), one per event,
  filled before the clock starts, consumed by a ``dramatiq`` worker with the same
  processes and threads on the engine's broker; its clock runs from the first message
  run to the last. Interleaved, so both see the same machine; the ratio is e2e/baseline.
- **mix**: the shipped journeys fed their samples scaled up to ``--mix-events`` (bench/mix.py):
  conditions, branches, waits, templates, policy, sends to the peers; events/s until
  everything they caused is final.
- **timers**: the mix's waiting enrollments, their timers made due at once
  (``--timer-rounds`` times: each round fires the waits the last one reached); timers
  fired (state advanced, deliveries written) per second, from the scheduler's claim of
  the first to the last fired.
- **p50 / p99**: received -> sent of bench events posted at half the e2e rate, and by stage:
  received -> applied (the event's ``processed_at``), applied -> cleared (the delivery's
  ``cleared_at``: the apply, the queue hop, the claim and the policy), cleared -> sent.
- ``--history N``: N finished bench journeys stored (bench/history.py), then one more e2e
  round: its rate relative to the rounds on the empty database.

If the server's autovacuum is off, the bench runs ``VACUUM ANALYZE`` on its schema before
each phase, as autovacuum would (plans otherwise stay those of the warm-up's empty tables).

It never hangs: each phase waits until every event is applied (or failed for good),
no timer is due and every delivery is final, polling an indexed count every 250 ms, at
most ``--deadline`` seconds; deliveries not sent are printed by status with a few
examples, and a deadline passed exits with status 1. The last line is the summary:

    e2e: N events/s; mix: M events/s; baseline: B msg/s; ratio: R; p50: X ms; p99: Y ms; timers: T/s

    python bench/e2e.py [--events 20000] [--rounds 3] [--processes 2] [--threads 8] [--history 1000000] [--quick]

Needs PostgreSQL (TEST_DATABASE_URL, default the local ``test`` database; a fresh schema
is created and dropped) and Redis (TEST_REDIS_URL; fresh namespaces, deleted afterwards).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

import orjson
import redis
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
import history  # noqa: E402
import mix  # noqa: E402
from ingest import wait_for  # noqa: E402
from kill import Processes, clean_namespace, engine_command  # noqa: E402
from loadgen import post, run_load  # noqa: E402

from engine.workers.actors import MAX_EVENT_ATTEMPTS  # noqa: E402
from engine.workers.broker import NamespacedRabbitmqBroker  # noqa: E402
from tests.integration.channels.peers import Peers, free_port_on, provider_peers  # noqa: E402

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 100
POLL = 0.25  # seconds between two looks at the database
SUMMARY = "e2e: {e2e:.0f} events/s; mix: {mix:.0f} events/s; baseline: {baseline:.0f} msg/s; ratio: {ratio:.2f}; " \
          "p50: {p50:.0f} ms; p99: {p99:.0f} ms; timers: {timers:.0f}/s"

# Work not done yet, each count on a partial index: events neither applied nor given up on,
# deliveries not final, timers due and not fired.
UNSETTLED = sa.text("""
    SELECT (SELECT count(*) FROM events WHERE processed_at IS NULL AND attempts < :attempts),
           (SELECT count(*) FROM deliveries WHERE status = 'pending')
             + (SELECT count(*) FROM deliveries WHERE status IN ('claimed', 'sending')),
           (SELECT count(*) FROM timers WHERE fired_at IS NULL AND due_at <= now())
""")
# Per delivery since a watermark: its trigger event received (API) -> delivery recorded sent (worker).
TIMES = sa.text("""
    SELECT extract(epoch FROM e.received_at), extract(epoch FROM d.sent_at),
           extract(epoch FROM e.processed_at), extract(epoch FROM d.cleared_at)
    FROM deliveries d JOIN enrollments n ON n.id = d.enrollment_id JOIN events e ON e.id = n.trigger_event_id
    WHERE d.id > :after AND d.status = 'sent'
""")
# When the work since the watermarks was last touched: events applied, deliveries final.
FINISHED = sa.text("""
    SELECT greatest((SELECT max(extract(epoch FROM processed_at)) FROM events WHERE id > :events),
                    (SELECT max(extract(epoch FROM updated_at)) FROM deliveries WHERE id > :deliveries))
""")
NOT_SENT = sa.text("SELECT status, count(*) FROM deliveries WHERE id > :after AND status <> 'sent' GROUP BY status")
EXAMPLES = sa.text("SELECT journey_id, step, channel, status, error FROM deliveries"
                   " WHERE id > :after AND status <> 'sent' ORDER BY id LIMIT 3")
FAILED_EVENTS = sa.text("SELECT count(*) FROM events WHERE id > :after AND processed_at IS NULL AND attempts >= :attempts")
WATERMARKS = sa.text("SELECT (SELECT coalesce(max(id), 0) FROM events), (SELECT coalesce(max(id), 0) FROM deliveries)")


class Stuck(SystemExit):
    """A phase passed its deadline with work not done (printed before)."""


@dataclass
class Phase:
    """What one phase did: events (or messages) and seconds, latencies when it has them."""

    count: int
    seconds: float
    latencies: list[float]
    #: received -> applied, applied -> cleared to send (queue hop, claim, policy), cleared -> sent
    stages: tuple[list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], []))

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100)[p - 1]


class Bench:
    """The running engine, the baseline worker and the peers; one method per thing measured."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], peers: Peers, logs: Path,
                 baseline_namespace: str) -> None:
        self.args, self.env, self.peers, self.logs = args, env, peers, logs
        self.db = sa.create_engine(env["DATABASE_URL"])
        self.processes = Processes(env, logs)
        self.redis = redis.Redis.from_url(env["REDIS_URL"])
        self.baseline_env = dict(env, BENCH_NAMESPACE=baseline_namespace)
        self.baseline_worker: subprocess.Popen[bytes] | None = None
        self._outputs: list[IO[bytes]] = []
        self.port = free_port_on("127.0.0.1")
        self.auth: dict[str, str] = {}
        os.environ.update(self.baseline_env)  # noop reads them at import: its broker, the same as the worker's
        import noop

        self.noop = noop
        self.atomic_fill = isinstance(noop.broker, RedisBroker)

    # -- the processes ----------------------------------------------------------------

    def start(self, journeys: Path) -> None:
        engine_command(self.env, "db", "upgrade")
        engine_command(self.env, "deploy", str(journeys))
        key = engine_command(self.env, "keys", "create", "bench").strip()
        self.auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        args = self.args
        web = self.processes.start("web", "serve", "--port", str(self.port), "--workers", str(args.web_workers))
        self.processes.start("worker", "worker", "--processes", str(args.processes), "--threads", str(args.threads))
        self.processes.start("scheduler", "scheduler")
        if self.atomic_fill:
            self.baseline_worker = self._start_baseline()
        wait_for(f"http://127.0.0.1:{self.port}/health", web)

    def _start_baseline(self) -> subprocess.Popen[bytes]:
        output = (self.logs / "baseline.log").open("ab")
        self._outputs.append(output)
        return subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "noop", "--path", str(HERE), "--processes", str(self.args.processes),
             "--threads", str(self.args.threads)], env=self.baseline_env, stdout=output, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.baseline_worker is not None:
            stop(self.baseline_worker)
        self.processes.stop_all()
        for output in self._outputs:
            output.close()
        if isinstance(self.noop.broker, NamespacedRabbitmqBroker):
            self.noop.broker.delete_queues([self.noop.QUEUE])
        self.noop.broker.close()
        self.redis.close()
        self.db.dispose()

    def worker_pid(self) -> int:
        return self.processes.running["worker"].pid

    # -- waiting, cheaply -------------------------------------------------------------

    def unsettled(self) -> tuple[int, int, int]:
        with self.db.connect() as connection:
            events, deliveries, timers = connection.execute(UNSETTLED, {"attempts": MAX_EVENT_ATTEMPTS}).one()
        return int(events), int(deliveries), int(timers)

    def settle(self, what: str, after: tuple[int, int]) -> None:
        """Wait until no work is left (or the deadline passes: print what is left, exit 1)."""
        deadline = time.monotonic() + self.args.deadline
        while any(left := self.unsettled()):
            for name, process in self.processes.running.items():
                if process.poll() is not None:
                    raise Stuck(f"{what}: journey {name} exited with {process.returncode}; logs in {self.logs}")
            if time.monotonic() > deadline:
                self.report_not_sent(what, after)
                raise Stuck(f"{what}: not done after {self.args.deadline:.0f}s: {left[0]} events to apply, "
                            f"{left[1]} deliveries not final, {left[2]} timers due; logs in {self.logs}")
            time.sleep(POLL)

    def report_not_sent(self, what: str, after: tuple[int, int]) -> None:
        """Print the deliveries since ``after`` that were not sent, by status, and a few of them; failed events."""
        with self.db.connect() as connection:
            statuses: dict[str, int] = dict(connection.execute(NOT_SENT, {"after": after[1]}).all())
            examples = connection.execute(EXAMPLES, {"after": after[1]}).all()
            failed = connection.execute(FAILED_EVENTS, {"after": after[0], "attempts": MAX_EVENT_ATTEMPTS}).scalar_one()
        if failed:
            print(f"  {what}: {failed} events failed (`journey events list`)", flush=True)
        if statuses:
            print(f"  {what}: not sent: " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())), flush=True)
            for row in examples:
                print(f"    {row.journey_id}/{row.step} {row.channel} {row.status}: {row.error}", flush=True)

    def by_channel(self, after: int) -> dict[str, dict[str, int]]:
        """The deliveries since ``after``: by channel, how many in each status."""
        found: dict[str, dict[str, int]] = {}
        with self.db.connect() as connection:
            for channel, status, n in connection.execute(sa.text(
                    "SELECT channel, status, count(*) FROM deliveries WHERE id > :after GROUP BY channel, status"),
                    {"after": after}):
                found.setdefault(channel, {})[status] = int(n)
        return found

    def maintain(self) -> bool:
        """``VACUUM ANALYZE`` the bench's tables if the server's autovacuum is off; True if it did.

        A database in production has autovacuum on: statistics that follow the tables' growth
        (plans that use the primary key once a table is no longer tiny) and dead row versions
        cleared from the indexes. With it off (this machine's CI configuration) every plan
        stays the one made for the empty tables of the warm-up, and every status change leaves
        a dead index entry behind; the bench does autovacuum's work before each phase instead.
        """
        with self.db.connect() as connection:
            if connection.execute(sa.text("SHOW autovacuum")).scalar_one() == "on":
                return False
        with self.db.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            tables = connection.execute(sa.text(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()")).scalars()
            connection.execute(sa.text(f"VACUUM ANALYZE {', '.join(tables)}"))  # the bench schema's tables only
        return True

    def watermarks(self) -> tuple[int, int]:
        with self.db.connect() as connection:
            events, deliveries = connection.execute(WATERMARKS).one()
        return int(events), int(deliveries)

    # -- what is measured -------------------------------------------------------------

    def post(self, batches: list[bytes], pace: float | None = None) -> None:
        load = run_load("127.0.0.1", self.port, lambda n: batches[n], connections=self.args.connections,
                        seconds=self.args.deadline, requests=len(batches), pace=pace)
        if load.statuses != {200: len(batches)}:
            raise Stuck(f"the server answered {load.statuses} to {len(batches)} batches")

    def bench_batches(self, run: str, events: int) -> list[bytes]:
        customers = self.args.customers
        return [post("/v1/batch", orjson.dumps({"batch": [
            {"type": "track", "userId": f"customer-{(n * BATCH + i) % customers}", "event": "bench_event",
             "messageId": f"{run}-{n}-{i}", "properties": {"n": n * BATCH + i}, "timestamp": "2026-11-23T10:00:00Z"}
            for i in range(min(BATCH, events - n * BATCH))
        ]}), self.auth) for n in range(math.ceil(events / BATCH))]

    def e2e(self, run: str, events: int, rate: float | None = None) -> Phase:
        """Post ``events`` bench events (at ``rate`` events/s, or as fast as acknowledged); the first post to the last sent."""
        after = self.watermarks()
        batches = self.bench_batches(run, events)
        started = time.time()
        self.post(batches, pace=BATCH / rate if rate else None)
        self.settle(run, after)
        self.report_not_sent(run, after)
        with self.db.connect() as connection:
            times = connection.execute(TIMES, {"after": after[1]}).all()
        if not times:
            raise Stuck(f"{run}: nothing was sent")
        last = max(float(sent) for _, sent, _, _ in times)
        stages = ([float(applied) - float(received) for received, _, applied, _ in times],
                  [float(cleared) - float(applied) for _, _, applied, cleared in times],
                  [float(sent) - float(cleared) for _, sent, _, cleared in times])
        return Phase(len(times), last - started, [float(sent) - float(received) for received, sent, _, _ in times], stages)

    def drain(self, name: str, messages: int) -> Phase:
        """Fill the no-op queue with ``messages``, then let the worker drain it; its first message to its last."""
        drain = f"{self.baseline_env['BENCH_NAMESPACE']}-{name}"
        batch = [self.noop.noop.message(drain, messages) for _ in range(messages)]
        broker = self.noop.broker
        if isinstance(broker, RedisBroker):  # one MULTI: the running worker sees the whole queue at once
            queue = f"{broker.namespace}:{self.noop.QUEUE}"
            ids = {str(uuid.uuid4()): message for message in batch}
            with broker.client.pipeline(transaction=True) as pipe:
                pipe.hset(f"{queue}.msgs", mapping={
                    rid: message.copy(options={"redis_message_id": rid}).encode() for rid, message in ids.items()})
                pipe.rpush(queue, *ids)
                pipe.execute()
        else:  # another broker: fill it, then start the worker
            for message in batch:
                broker.enqueue(message)
            self.baseline_worker = self._start_baseline()
        deadline = time.monotonic() + self.args.deadline
        try:
            while (last := self.redis.get(self.noop.last_key(drain))) is None:
                if self.baseline_worker is not None and self.baseline_worker.poll() is not None:
                    raise Stuck(f"the no-op worker exited with {self.baseline_worker.returncode}; logs in {self.logs}")
                if time.monotonic() > deadline:
                    raise Stuck(f"baseline {name}: {int(self.redis.get(drain) or 0)} of {messages} messages "
                                f"after {self.args.deadline:.0f}s")
                time.sleep(0.05)
        finally:
            if not self.atomic_fill and self.baseline_worker is not None:
                stop(self.baseline_worker)
                self.baseline_worker = None
        first = float(self.redis.get(self.noop.first_key(drain)) or 0)
        return Phase(messages - 1, float(last) - first, [])

    def mix(self, run: str, events: int) -> Phase:
        """Post the shipped journeys' samples, scaled to about ``events``; the first post to the last thing they caused."""
        count = max(1, round(events / len(mix.samples())))
        copies = mix.copies(run, count, dt.datetime.now(dt.timezone.utc))
        batches = [post("/v1/batch", orjson.dumps({"batch": copy}), self.auth) for copy in copies]  # a copy per request
        after = self.watermarks()
        started = time.time()
        self.post(batches)
        self.settle(run, after)
        self.report_not_sent(run, after)
        with self.db.connect() as connection:
            finished = connection.execute(FINISHED, {"events": after[0], "deliveries": after[1]}).scalar_one()
        return Phase(sum(len(copy) for copy in copies), float(finished) - started, [])

    def timers(self, rounds: int) -> list[tuple[Phase, int]]:
        """Make every waiting timer due, ``rounds`` times; per round, timers fired per second and the deliveries written."""
        done = []
        for n in range(rounds):
            after = self.watermarks()
            with self.db.begin() as connection:
                due = connection.execute(sa.text(
                    "UPDATE timers SET due_at = now() WHERE fired_at IS NULL AND enqueued_at IS NULL RETURNING now()")).all()
            if not due:
                break
            began = due[0][0]
            self.settle(f"timers {n + 1}", after)
            self.report_not_sent(f"timers {n + 1}", after)
            with self.db.connect() as connection:
                count, first, last = connection.execute(sa.text(
                    "SELECT count(*), extract(epoch FROM min(enqueued_at)), extract(epoch FROM max(fired_at))"
                    " FROM timers WHERE fired_at >= :began"), {"began": began}).one()
                written = connection.execute(sa.text("SELECT count(*) FROM deliveries WHERE id > :after"),
                                             {"after": after[1]}).scalar_one()
            if count:
                done.append((Phase(int(count), float(last) - float(first), []), int(written)))
        return done


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the no-op worker (SIGTERM: dramatiq finishes what it runs, then exits)."""
    process.terminate()
    process.wait(timeout=60)


@contextlib.contextmanager
def py_spy(pid: int, output: str | None, gil: bool = False) -> Iterator[None]:
    """``py-spy record`` the worker and its processes while the block runs (nothing without ``output``).

    Threads waiting for PostgreSQL count as busy; with ``gil``, only the thread holding the GIL (CPU).
    """
    if not output:
        yield
        return
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "--subprocesses",
                            *(["--gil"] if gil else []), "--format", "raw", "-p", str(pid), "-o", output],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it recorded
        spy.wait(timeout=60)


def run(bench: Bench, args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, float]:
    """Every phase in turn; the figures of the summary line."""
    per_round = max(1, args.events // args.rounds)
    bench.e2e("warm", BATCH * (1 if args.quick else 2))
    bench.drain("warm", BATCH * 2)
    bench.mix("mixwarm", 1)
    if bench.maintain():
        say("autovacuum is off on this server: the bench runs VACUUM ANALYZE before each phase, as autovacuum would")
    engine: list[Phase] = []
    baseline: list[Phase] = []
    with py_spy(bench.worker_pid(), args.py_spy, args.py_spy_gil):
        for n in range(1, args.rounds + 1):
            bench.maintain()
            baseline.append(bench.drain(f"r{n}", per_round))
            engine.append(bench.e2e(f"r{n}", per_round))
            say(f"round {n}: baseline {baseline[-1].rate:7.0f} msg/s   e2e {engine[-1].rate:7.0f} events/s "
                f"({engine[-1].count} sent in {engine[-1].seconds:.2f}s; backlog p50 "
                f"{percentile(engine[-1].latencies, 50) * 1000:.0f} ms, p99 {percentile(engine[-1].latencies, 99) * 1000:.0f} ms)")
    e2e_rate = sum(p.count for p in engine) / sum(p.seconds for p in engine)
    baseline_rate = sum(p.count for p in baseline) / sum(p.seconds for p in baseline)
    say(f"e2e {e2e_rate:.0f} events/s against the no-op drain's {baseline_rate:.0f} msg/s: ratio {e2e_rate / baseline_rate:.2f}")

    bench.maintain()
    before_mix = bench.watermarks()
    mixed = bench.mix("mix", args.mix_events)
    say(f"mix: {mixed.count} events of the shipped journeys' samples in {mixed.seconds:.2f}s: {mixed.rate:.0f} events/s")
    rounds = bench.timers(args.timer_rounds)
    for n, (fired, written) in enumerate(rounds, 1):
        say(f"timers {n}: {fired.count} fired in {fired.seconds:.2f}s from the scheduler's claim ({written} deliveries "
            f"written): {fired.rate:.0f}/s")
    timers = Phase(sum(p.count for p, _ in rounds), sum(p.seconds for p, _ in rounds), [])
    say(f"timers: {timers.count} fired in {timers.seconds:.2f}s: {timers.rate:.0f}/s")
    say("mix and timers, deliveries by channel: " + "; ".join(
        f"{channel} " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        for channel, statuses in sorted(bench.by_channel(before_mix[1]).items())))

    bench.maintain()
    paced_rate = e2e_rate / 2
    paced = bench.e2e("paced", args.latency_events, rate=paced_rate)
    p50, p99 = percentile(paced.latencies, 50) * 1000, percentile(paced.latencies, 99) * 1000
    say(f"received -> sent at {paced_rate:.0f} events/s (half the e2e rate): p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(paced.latencies) * 1000:.0f} ms ({paced.count} events)")
    say("  p50 / p99 by stage: " + "; ".join(
        f"{name} {percentile(values, 50) * 1000:.0f} / {percentile(values, 99) * 1000:.0f} ms"
        for name, values in zip(("received -> applied", "applied -> cleared", "cleared -> sent"), paced.stages, strict=True)))

    if args.history:
        began = time.monotonic()
        history.fill(bench.db, args.history)
        say(f"history: {args.history:,} bench journeys stored in {time.monotonic() - began:.0f}s")
        after = bench.drain("hist", per_round)
        stored = bench.e2e("hist", per_round)
        say(f"history: e2e {stored.rate:.0f} events/s after {args.history:,} stored events, "
            f"{stored.rate / e2e_rate:.2f} of the empty database's; no-op drain {after.rate:.0f} msg/s, "
            f"{after.rate / baseline_rate:.2f} of before; ratio {stored.rate / after.rate:.2f}, "
            f"{stored.rate / after.rate / (e2e_rate / baseline_rate):.2f} of the empty database's")
    return {"e2e": e2e_rate, "mix": mixed.rate, "baseline": baseline_rate, "ratio": e2e_rate / baseline_rate,
            "p50": p50, "p99": p99, "timers": timers.rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events of the e2e rounds, all told")
    parser.add_argument("--rounds", type=int, default=3, help="e2e rounds, each after a baseline drain")
    parser.add_argument("--customers", type=int, default=5_000, help="userIds the bench events are spread over")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (engine and baseline)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4, help="concurrent HTTP clients posting batches")
    parser.add_argument("--mix-events", type=int, default=None, help="events of the mix (default: a quarter of --events)")
    parser.add_argument("--timer-rounds", type=int, default=3, help="times the waiting timers are made due")
    parser.add_argument("--latency-events", type=int, default=None,
                        help="events posted at half the e2e rate for p50/p99 (default: a quarter of --events)")
    parser.add_argument("--history", type=int, default=0, help="then store this many finished bench journeys "
                                                                "and run one more e2e round")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds a phase may take before the bench gives up")
    parser.add_argument("--py-spy", metavar="FILE", help="py-spy record the worker during the e2e rounds (raw stacks)")
    parser.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only the threads holding the GIL")
    parser.add_argument("--quick", action="store_true", help="one round each, small warm-up and latency run")
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's own deprecation notice, once a login
    if args.quick:
        args.rounds, args.timer_rounds = 1, 1
    if args.latency_events is None:
        args.latency_events = args.events if args.quick else max(BATCH, args.events // 4)
    if args.mix_events is None:
        args.mix_events = args.events if args.quick else args.events // 4

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    namespace, baseline_namespace = f"bench-{uuid.uuid4().hex[:8]}", f"bench-noop-{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
    print(f"e2e bench: {args.events} events in {args.rounds} rounds, batches of {BATCH} from {args.connections} "
          f"connections, {args.customers} customers; journey serve --workers {args.web_workers}, journey worker "
          f"--processes {args.processes} --threads {args.threads}, journey scheduler; {os.cpu_count()} cores", flush=True)
    logs = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    ok = False
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with provider_peers() as peers:
            env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=REDIS_URL, JOURNEY_NAMESPACE=namespace,
                       LOG_LEVEL="WARNING", **peers.environment())
            bench = Bench(args, env, peers, logs, baseline_namespace)
            try:
                mix.write_journeys(logs / "journeys", f"{peers.webhook.url}/hooks/nps-detractor")
                bench.start(logs / "journeys")
                figures = run(bench, args, lambda line: print(line, flush=True))
            finally:
                bench.stop()
        print(SUMMARY.format(**figures), flush=True)
        ok = True
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        clean_namespace(os.environ.get("BROKER_URL") or REDIS_URL, namespace)
        for prefix in (namespace, baseline_namespace):  # the drains' counters, in Redis with either broker
            for redis_key in client.scan_iter(f"{prefix}*"):
                client.delete(redis_key)
        client.close()
        if ok:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"logs kept in {logs}", file=sys.stderr)


if __name__ == "__main__":
    main()
