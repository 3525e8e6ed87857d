"""The engine's processes: ``serve`` (web), ``worker``, ``scheduler``, and ``dev`` (all in one)."""

from __future__ import annotations

import errno
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import click

from engine.cli.codes import RET_CONFIG, RET_SERVICE
from engine.cli.common import a_directory, fail, load_settings, services_for
from engine.errors import JourneyError, StorageError
from engine.services import Services
from engine.storage.db import check_current, upgrade
from engine.workers.broker import broker_name


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="JOURNEY_HOST")
@click.option("--port", default=8000, show_default=True, envvar="PORT", type=int)
@click.option("--workers", default=1, show_default=True, envvar="JOURNEY_WEB_WORKERS", type=int,
              help="Server processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP API (ingestion and admin endpoints)."""
    import uvicorn

    settings = load_settings()
    _check_port(host, port)
    _check_database()
    uvicorn.run(
        "engine.api.asgi:build",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@click.command("worker")
@click.option("--processes", type=int, default=None, help="Worker processes [JOURNEY_WORKER_PROCESSES].")
@click.option("--threads", type=int, default=None, help="Threads per process [JOURNEY_WORKER_THREADS].")
@click.option("--queues", "-Q", multiple=True, help="Only consume these queues (default: all).")
def worker(processes: int | None, threads: int | None, queues: tuple[str, ...]) -> None:
    """Run Dramatiq worker processes on the broker (BROKER_URL, else REDIS_URL)."""
    from dramatiq import cli as dramatiq_cli

    settings = load_settings()
    if not settings.queue_url:
        fail("REDIS_URL is not set: a separate worker needs a shared broker: set REDIS_URL (Redis) or BROKER_URL "
             "(amqp://... for RabbitMQ), or run `journey dev`", RET_SERVICE)
    _check_database()
    args = [
        "engine.workers.main:broker",
        "--processes", str(processes or settings.worker_processes),
        "--threads", str(threads or settings.worker_threads),
    ]
    for queue in queues:
        args += ["--queues", queue]
    sys.exit(dramatiq_cli.main(dramatiq_cli.make_argument_parser().parse_args(args)))


@click.command("scheduler")
def scheduler() -> None:
    """Run the scheduler: due timers and the sweeper of lost work."""
    from engine.scheduler import Scheduler

    with services_for(process="journey scheduler") as services:
        check_current(services.engine)
        stop = _stop_on_signals()
        click.echo(f"scheduler sweeping every {services.settings.sweep_interval}", err=True)
        Scheduler(services).run(stop)


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="JOURNEY_HOST")
@click.option("--port", default=8000, show_default=True, envvar="PORT", type=int)
@click.option("--demo", is_flag=True, help="First deploy journeys/ and tell each customer's story in the "
              "journeys/samples/*.jsonl scenes (as `journey demo` does), then serve.")
@click.option("--journeys", "journeys_dir", default="journeys", show_default=True,
              callback=a_directory, help="The journeys the demo deploys.")
@click.option("--verbose", "-v", is_flag=True, help="With --demo: show the engine's logs while the story is told.")
def dev(host: str, port: int, demo: bool, journeys_dir: str, verbose: bool) -> None:
    """Run API, worker and scheduler in one process, migrating the database first.

    With REDIS_URL unset the queue lives in this process's memory; the database stays
    the source of truth, so stopping loses nothing that was acknowledged. A channel
    without settings (no SMTP_URL, say) logs its messages instead of sending them.
    """
    import uvicorn
    from dramatiq import Worker

    from engine import keys as api_keys
    from engine.api.app import create_app
    from engine.scheduler import Scheduler

    settings = load_settings()
    _check_port(host, port)
    quiet = demo and not verbose  # the channels are named after the story, which says what each did
    with services_for(process=None if quiet else "journey dev", preview_unconfigured=True) as services:
        upgrade(services.engine)
        with services.sessions.begin() as session:
            if not api_keys.list_keys(session):
                _, secret = api_keys.create_key(session, "dev")
                click.echo(f"Created a write key for this database (shown once): {secret}", err=True)
        if demo:
            _demo(services, Path(journeys_dir), verbose)
            if quiet:
                services.log_channels("journey dev")
        worker = Worker(services.broker, worker_threads=settings.worker_threads)
        worker.start()
        stop = threading.Event()
        sweeper = threading.Thread(target=Scheduler(services).run, args=(stop,), name="scheduler", daemon=True)
        sweeper.start()
        broker = broker_name(settings)
        click.echo(f"journey dev: {settings.database_url} and {broker}; API on http://{host}:{port}"
                   " (Ctrl-C stops it)", err=True)
        try:
            uvicorn.run(create_app(services), host=host, port=port, log_level=settings.log_level.lower(),
                        access_log=False)
        finally:
            stop.set()
            worker.stop()


def _demo(services: Services, directory: Path, verbose: bool) -> None:
    """Deploy ``directory`` into the user's database (stamped now), then tell the story of its scenes.

    The scenes run on twins of their own (:mod:`engine.demo`); a demo that fails says so
    and the engine starts all the same.
    """
    from engine import deploy
    from engine.cli.demo import quiet, tell
    from engine.definitions import journey_files

    try:
        with quiet(verbose):
            snapshots = [deploy.snapshot(path) for path in journey_files([directory])]
            with services.sessions.begin() as session:
                changes = deploy.deploy(session, snapshots, services.clock())
            services.deployed.invalidate()
            fresh = sum(c.kind != "unchanged" for c in changes)
            click.echo(f"journey dev: {len(snapshots)} journeys deployed from {directory}/ ({fresh} new versions): "
                       "the engine runs them on the events you send; first, the sample scenes' story:\n", err=True)
            for block in tell(services, directory):
                click.echo(block)
    except (click.ClickException, JourneyError) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"Error: the demo failed: {message}", err=True)


def _check_port(host: str, port: int) -> None:
    """Exit with a clear line if the API cannot listen on ``host:port`` (uvicorn would only log it).

    The probe binds the way uvicorn does (SO_REUSEADDR), so a port held only by closing
    connections is free, and one another process listens on is not.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        fail(f"cannot listen on {host}:{port}: {host!r} is not an address of this machine ({exc}); "
             "set JOURNEY_HOST (or --host) to one, such as 127.0.0.1 or 0.0.0.0", RET_CONFIG)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                free = _free_port_after(family, address, port)
                instead = f"PORT={free}" if free else "PORT to a free port"
                fail(f"port {port} is in use on {host}: stop the other process or set {instead} (or --port)", RET_CONFIG)
            if exc.errno == errno.EACCES:
                fail(f"cannot listen on port {port}: permission denied; ports below 1024 need privileges, "
                     "so set PORT (or --port) to 1024 or above", RET_CONFIG)
            fail(f"cannot listen on {host}:{port}: {exc.strerror}; set JOURNEY_HOST and PORT "
                 "(or --host and --port) to an address of this machine and a free port", RET_CONFIG)


def _free_port_after(family: int, address: tuple[Any, ...], port: int) -> int | None:
    """The first of the next few ports that is free on the same address, to suggest."""
    for candidate in range(port + 1, min(port + 20, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address[0], candidate, *address[2:]))
            except OSError:
                continue
            return candidate
    return None


def _check_database() -> None:
    """Exit with a clear line if a setting is malformed or the database is not migrated."""
    with services_for() as services:
        try:
            check_current(services.engine)
        except StorageError as exc:
            fail(str(exc), RET_SERVICE)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


COMMANDS = [serve, worker, scheduler, dev]
