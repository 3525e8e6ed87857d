"""``journey trace`` and ``journey queues``: seeing what the engine did and what waits."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from engine.cli.codes import RET_NOT_FOUND, RET_SERVICE
from engine.cli.common import fail, services_for
from engine.queues import Backlog, QueueDepth, backlog, queue_depths
from engine.storage.db import check_current
from engine.trace import explain, format_text
from engine.workers.broker import broker_name


@click.command("trace")
@click.argument("customer")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
def trace(customer: str, as_json: bool) -> None:
    """Explain CUSTOMER (a user id or anonymous id): journeys entered and left, the path
    taken with each condition's value, waits, deliveries and their outcome, stage."""
    with services_for() as services:
        check_current(services.engine)
        with services.sessions() as session:
            explanation = explain(session, customer)
    if explanation is None:
        fail(f"no customer is known by the user id or anonymous id {customer!r}", RET_NOT_FOUND)
    if as_json:
        click.echo(json.dumps(explanation, indent=2, default=str))
    else:
        click.echo(format_text(explanation))


@click.command("queues")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def queues(as_json: bool) -> None:
    """Show each queue's messages (ready, delayed, in flight, dead) and the database's
    backlog (pending events, due timers and scheduler lag, deliveries by status)."""
    with services_for() as services:
        check_current(services.engine)
        with services.sessions() as session:
            work = backlog(session, services.clock())
        try:
            depths = queue_depths(services.broker)
        except Exception as exc:  # noqa: BLE001 - redis.ConnectionError, pika's AMQPError and friends
            settings = services.settings
            reason = (str(exc) or repr(exc)).rstrip(".")  # pika's errors may say nothing but in their repr
            fail(f"could not read the queues from {broker_name(settings)}: {reason}; is {settings.broker_variable} right "
                 f"and {'RabbitMQ' if settings.is_rabbitmq else 'Redis'} up?", RET_SERVICE)
        local = not services.settings.queue_url
        unknown_in_flight = services.settings.is_rabbitmq
    if as_json:
        click.echo(json.dumps({"queues": [asdict(d) for d in depths], "backlog": asdict(work)}, indent=2))
    else:
        click.echo(format_queues(depths, work))
        if unknown_in_flight:
            click.echo("(RabbitMQ: messages workers hold are in no column, IN FLIGHT shows '-'; DELAYED counts only the "
                       "delayed messages no worker has taken yet to hold until they are due)", err=True)
        if local:
            click.echo("(REDIS_URL is unset: these are this process's own in-memory queues, always empty;"
                       " the queues of `journey dev` are not visible from another process)", err=True)


def format_queues(depths: list[QueueDepth], work: Backlog) -> str:
    """A table of the queues, then the database's backlog."""
    width = max([len("QUEUE"), *(len(d.name) for d in depths)])
    lines = [f"{'QUEUE':<{width}}  {'READY':>7} {'DELAYED':>7} {'IN FLIGHT':>9} {'DEAD':>7}"]
    lines += [f"{d.name:<{width}}  {d.ready:>7} {d.delayed:>7} {'-' if d.in_flight is None else d.in_flight:>9} {d.dead:>7}"
              for d in depths]
    if not depths:
        lines.append("(no queue declared)")
    deliveries = ", ".join(f"{n} {status}" for status, n in sorted(work.deliveries.items())) or "none"
    lines += [
        "",
        f"events pending   {work.events_pending} ({work.events_failing} failing)",
        f"timers due       {work.timers_due} (scheduler lag {work.scheduler_lag_seconds:.0f}s)",
        f"deliveries       {deliveries}",
    ]
    return "\n".join(lines)


COMMANDS = [trace, queues]
