"""The baseline of bench/e2e.py: a Dramatiq actor that does nothing but count itself.

    dramatiq noop --processes P --threads T      (with REDIS_URL and BENCH_NAMESPACE set, BROKER_URL if not Redis)
    python bench/noop.py [--messages 20000] [--processes 2] [--threads 8] [--broker-url URL]...

Its broker is the engine's own (:func:`engine.workers.broker.make_broker`), from
``BROKER_URL``, else ``REDIS_URL``: Redis or RabbitMQ, with the engine's middleware and
options, under a namespace of its own. Each drain is a counter in ``REDIS_URL``'s Redis
(with either broker), named in its messages: one INCR per message; the message that
makes it 1 and the one that makes it ``total`` also note the time, so bench/e2e.py reads
a drain's first and last message without polling for them. bench/e2e.py runs the engine
and this baseline with the environment's ``BROKER_URL``, so
``BROKER_URL=amqp://... python bench/e2e.py`` benches the engine on RabbitMQ.

Run as a script it is a bench of its own: enqueue ``--messages`` messages from one thread
(as an API process does: on RabbitMQ each waits for the broker's confirm) with no worker
running, then consume them with a real ``dramatiq`` worker of ``--processes`` and
``--threads`` (timed from its first message to the last); on each broker given with
``--broker-url`` (default: Redis at TEST_REDIS_URL, then RabbitMQ at TEST_RABBITMQ_URL),
one after the other in the same run, the first the baseline of the others.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dramatiq
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from engine.settings import Settings  # noqa: E402
from engine.workers.broker import NamespacedRabbitmqBroker, make_broker  # noqa: E402

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
WARM_UP = 200  # messages, before the clock starts: the worker connected and consuming
QUEUE = "noop"


def first_key(drain: str) -> str:
    """Where the drain's first message noted when it ran."""
    return f"{drain}:first"


def last_key(drain: str) -> str:
    """Where the drain's last message noted when it ran."""
    return f"{drain}:last"


def declare(broker_url: str, redis_url: str, namespace: str) -> tuple[dramatiq.Broker, dramatiq.Actor, redis.Redis, str]:
    """The broker at ``broker_url``, the no-op actor on it, the counter's client and the key of a drain of one's own."""
    broker = make_broker(Settings(redis_url=redis_url, broker_url=broker_url, namespace=namespace))
    counter, key = redis.Redis.from_url(redis_url), f"{namespace}-done"

    def noop(drain: str, total: int) -> None:
        """Count one message of ``drain``; the first and the last note when they ran."""
        done = counter.incr(drain)
        if done == 1:
            counter.set(first_key(drain), repr(time.time()))
        if done == total:
            counter.set(last_key(drain), repr(time.time()))

    return broker, dramatiq.actor(broker=broker, actor_name="noop", queue_name=QUEUE, max_retries=0)(noop), counter, key


if "BENCH_NAMESPACE" in os.environ:  # loaded by the dramatiq worker, or imported by bench/e2e.py
    NAMESPACE = os.environ["BENCH_NAMESPACE"]
    broker, noop, _counter, COUNTER = declare(os.environ.get("BROKER_URL") or os.environ["REDIS_URL"], os.environ["REDIS_URL"],
                                              NAMESPACE)
    dramatiq.set_broker(broker)


def bench(broker_url: str, args: argparse.Namespace) -> tuple[float, float]:
    """(enqueued/s, consumed/s) of ``args.messages`` on ``broker_url``.

    The messages are enqueued first, with no worker running; then a worker starts, and
    the clock of its rate runs from its first message to the last.
    """
    namespace = f"bench-noop-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": REDIS_URL, "BROKER_URL": broker_url, "BENCH_NAMESPACE": namespace}
    sender, actor, counter, key = declare(broker_url, REDIS_URL, namespace)
    worker: subprocess.Popen[bytes] | None = None

    def consumed() -> int:
        if worker is not None and worker.poll() is not None:
            raise SystemExit(f"the dramatiq worker exited with {worker.returncode}")
        return int(counter.get(key) or 0)

    try:
        started = time.monotonic()
        for _ in range(args.messages):
            actor.send(key, args.messages)
        enqueued = args.messages / (time.monotonic() - started)
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "noop", "--path", str(HERE), "--processes", str(args.processes),
             "--threads", str(args.threads)], env=env, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 600
        while (first := consumed()) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        started = time.monotonic()
        while (done := consumed()) < args.messages:
            if time.monotonic() > deadline:
                raise SystemExit(f"{broker_url}: {done} of {args.messages} messages consumed after 600s")
            time.sleep(0.01)
        return enqueued, (args.messages - first) / (time.monotonic() - started)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait()
        for stale in counter.scan_iter(f"{namespace}*"):
            counter.delete(stale)
        if isinstance(sender, NamespacedRabbitmqBroker):
            sender.delete_queues(["noop"])
        counter.close()
        sender.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--broker-url", action="append", dest="brokers",
                        help="a broker to bench (repeat for several; the first is the baseline); "
                             "default: TEST_REDIS_URL, then TEST_RABBITMQ_URL")
    args = parser.parse_args()
    brokers = args.brokers or [REDIS_URL, RABBITMQ_URL]
    print(f"no-op actor bench: {args.messages} messages enqueued from one thread, dramatiq worker --processes "
          f"{args.processes} --threads {args.threads}; {os.cpu_count()} cores", flush=True)
    baseline: tuple[float, float] | None = None
    for url in brokers:
        enqueued, consumed = bench(url, args)
        baseline = baseline or (enqueued, consumed)
        scheme, _, rest = url.partition("://")
        name = f"{scheme}://{rest.rpartition('@')[2]}"  # without a password
        print(f"{name:<28} enqueued {enqueued:>6.0f}/s (ratio {enqueued / baseline[0]:.2f})   "
              f"consumed {consumed:>6.0f} messages/s (ratio {consumed / baseline[1]:.2f})", flush=True)


if __name__ == "__main__":
    main()
