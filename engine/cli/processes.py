"""The engine's processes: ``serve`` (web), ``worker``, ``scheduler``, and ``dev`` (all in one)."""

from __future__ import annotations

import errno
import signal
import socket
import sys
import threading

import click

from engine.cli.codes import RET_CONFIG, RET_SERVICE
from engine.cli.common import fail, load_settings, services_for
from engine.errors import StorageError
from engine.storage.db import check_current, upgrade


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
    """Run Dramatiq worker processes on REDIS_URL."""
    from dramatiq import cli as dramatiq_cli

    settings = load_settings()
    if not settings.redis_url:
        fail("REDIS_URL is not set: a separate worker needs a shared broker (or run `journey dev`)", RET_SERVICE)
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
@click.option("--demo", is_flag=True, help="Deploy journeys/, feed it journeys/samples/*.jsonl, "
              "fast-forward the waits and print what each customer received.")
@click.option("--journeys", "journeys_dir", default="journeys", show_default=True,
              callback=lambda ctx, param, value: _directory(value, "--journeys"),
              help="The journeys the demo deploys.")
def dev(host: str, port: int, demo: bool, journeys_dir: str) -> None:
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

    from pathlib import Path

    settings = load_settings()
    _check_port(host, port)
    with services_for(process="journey dev", preview_unconfigured=True) as services:
        upgrade(services.engine)
        with services.sessions.begin() as session:
            if not api_keys.list_keys(session):
                _, secret = api_keys.create_key(session, "dev")
                click.echo(f"Created a write key for this database (shown once): {secret}", err=True)
        worker = Worker(services.broker, worker_threads=settings.worker_threads)
        worker.start()
        stop = threading.Event()
        sweeper = threading.Thread(target=Scheduler(services).run, args=(stop,), name="scheduler", daemon=True)
        sweeper.start()
        broker = "Redis at " + settings.redis_url if settings.redis_url else "the in-process broker"
        click.echo(f"journey dev: {settings.database_url} and {broker}; API on http://{host}:{port}", err=True)
        if demo:
            from engine.demo import run_demo

            def show() -> None:
                try:
                    run_demo(services, f"http://{host}:{port}", Path(journeys_dir), click.echo)
                    click.echo(f"\nThe engine keeps running on http://{host}:{port} (Ctrl-C stops it).", err=True)
                except Exception as exc:  # noqa: BLE001 - the demo failing must not stop the engine
                    click.echo(f"Error: the demo failed: {exc}", err=True)

            threading.Thread(target=show, name="demo", daemon=True).start()
        try:
            uvicorn.run(create_app(services), host=host, port=port, log_level=settings.log_level.lower(),
                        access_log=False)
        finally:
            stop.set()
            worker.stop()


def _directory(value: str, option: str) -> str:
    """``value`` if it is not a file; a file where a directory belongs is a usage error that says what to give."""
    from pathlib import Path

    path = Path(value)
    if path.is_file():
        raise click.BadParameter(f"{value} is a file; give the directory that holds it, such as {option} {path.parent}",
                                 param_hint=option)
    return value


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


def _free_port_after(family: int, address: tuple, port: int) -> int | None:  # type: ignore[type-arg]
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
