"""``journey dev --demo``: deploy the shipped journeys, feed them their sample events over
HTTP, fast-forward the waits, and show what each customer received.

The engine runs for real (API, worker, scheduler, database); only time is compressed:
the sample events are posted in their timeline's order, and the workers' clock
(``Services.clock``) moves to each event's moment and, in between, to each timer and
each end of quiet hours that falls due, earliest first. For timelines without a running
engine, use ``journey simulate``.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

from engine import deploy, keys
from engine.definitions import journey_files
from engine.errors import PayloadError
from engine.delivery import UNSETTLED
from engine.segment import normalize
from engine.services import Services
from engine.storage.models import Customer, Delivery, Event, Timer
from engine.twin import VirtualClock, fast_forward

MAX_ROUNDS = 200


def run_demo(services: Services, base_url: str, directory: Path, say: Callable[[str], None]) -> None:
    """Run the demo against the engine serving at ``base_url``; report through ``say``."""
    now = datetime.now(timezone.utc)
    events = _sample_events(directory / "samples", now)  # a broken sample fails before anything is deployed
    with services.sessions.begin() as session:
        snapshots = [deploy.snapshot(path) for path in journey_files([directory])]
        changes = deploy.deploy(session, snapshots, now)
        _, key = keys.create_key(session, "demo")
    services.deployed.invalidate()
    say(f"demo: {len(snapshots)} journeys deployed ({sum(c.kind != 'unchanged' for c in changes)} new versions)")
    run = uuid.uuid4().hex[:6]
    wait_for_http(f"{base_url}/health")
    # The samples' timeline, replayed from now on a virtual clock: the workers apply each
    # event at its moment, and the waits between (timers, quiet hours) pass at theirs.
    clock = VirtualClock(now)
    real_clock, services.clock = services.clock, clock
    first = _timestamp(events[0][1]) if events else now
    rounds = 0
    try:
        with httpx.Client(base_url=base_url, auth=(key, ""), timeout=10) as client:
            for source, event in events:
                at = now + (_timestamp(event) - first)
                rounds += _fast_forward(services, clock, until=at)
                clock.current = max(clock.current, at)
                event = dict(event, timestamp=clock.current.isoformat(),
                             messageId=f"demo-{run}-{source}-{event.get('messageId', uuid.uuid4().hex)}")
                response = client.post(f"/v1/{event['type']}", json=event)
                if response.status_code >= 300:
                    say(f"demo: {source}: {response.status_code} {response.text}")
                _settle(services)
        say(f"demo: sent {len(events)} sample events from {directory / 'samples'}, on their timeline")
        rounds += _fast_forward(services, clock, until=None)
    finally:
        services.clock = real_clock
    say(f"demo: fast-forwarded {rounds} waits (timers and quiet hours), to {clock.current:%Y-%m-%d %H:%M} UTC")
    say(received(services))


def _fast_forward(services: Services, clock: VirtualClock, until: datetime | None) -> int:
    """Let the timers and deferred sends due before ``until`` (all, if None) go, earliest first.

    The twin's driver loop (:func:`engine.twin.fast_forward`), with the real workers of
    this process doing the work: each step waits until they have settled.
    """
    return fast_forward(services, clock, until, lambda: _settle(services), inclusive=False, max_rounds=MAX_ROUNDS)


def _timestamp(event: dict[str, Any]) -> datetime:
    stamp = event.get("timestamp")
    return _aware(stamp) if isinstance(stamp, str) else datetime.now(timezone.utc)  # type: ignore[return-value]


def received(services: Services) -> str:
    """What each customer received, as text: one line per delivery."""
    with services.sessions() as session:
        rows = session.execute(
            select(Customer.external_id, Delivery.journey_id, Delivery.step, Delivery.channel, Delivery.status,
                   Delivery.rendered, Delivery.error)
            .join(Customer, Customer.id == Delivery.customer_id)
            .order_by(Customer.external_id, Delivery.id)
        ).all()
    lines, current = [], None
    width = max((len(f"{r[1]}.{r[2]}") for r in rows), default=0)
    for customer, journey, step, channel, status, rendered, error in rows:
        if customer != current:
            lines.append(f"\n{customer}")
            current = customer
        what = ""
        if rendered:
            what = rendered.get("subject") or rendered.get("title") or rendered.get("text") or rendered.get("action", "")
            if rendered.get("audience"):
                what = f"{rendered.get('action')} {rendered['audience']}"
        what = " ".join(str(what).split())[:70]
        where = f"{journey}.{step}"
        lines.append(f"  {where:<{width}}  {channel:<11} {status:<7} {what}{'  (' + error + ')' if error else ''}")
    return "What each customer received:" + "\n".join(lines) if lines else "No deliveries."


def _aware(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):  # SQLite aggregates lose the type; sample timestamps are text
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def _sample_events(directory: Path, now: datetime) -> list[tuple[str, dict]]:
    """Every sample event once: the files repeat the same customers' history (one order in
    several files has several messageIds), and the demo shows one history per customer.

    Raises:
        ValueError: a line is not JSON or not a valid Segment message; the message names
            its file and line, and what the API would say (``unknown type 'trak'. Did you mean 'track'?``).
    """
    events, seen = [], set()
    for path in sorted(directory.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                normalize(event, source="demo", received_at=now)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            except PayloadError as exc:
                reasons = "; ".join(str(problem) for problem in exc.problems)
                raise ValueError(f"{path}:{number}: {reasons}") from None
            same = orjson.dumps({k: v for k, v in event.items() if k != "messageId"}, option=orjson.OPT_SORT_KEYS)
            if same not in seen:
                seen.add(same)
                events.append((path.stem, event))
    events.sort(key=lambda item: item[1].get("timestamp", ""))
    return events


def _settle(services: Services, timeout: float = 60.0) -> None:
    """Wait until no event is pending, no delivery is pending, claimed or sending, no timer is due."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = services.clock()
        with services.sessions() as session:
            busy = session.execute(select(func.count()).select_from(Event).where(Event.processed_at.is_(None), Event.attempts < 5)).scalar_one()
            busy += session.execute(
                select(func.count()).select_from(Delivery).where(
                    Delivery.status.in_(UNSETTLED),
                    (Delivery.not_before.is_(None)) | (Delivery.not_before <= now),  # deferred ones wait
                )
            ).scalar_one()
            busy += session.execute(select(func.count()).select_from(Timer).where(Timer.fired_at.is_(None), Timer.enqueued_at.is_not(None), Timer.due_at <= now)).scalar_one()
        if not busy:
            return
        time.sleep(0.1)


def wait_for_http(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers 200, failing early if ``process`` (the server) died.

    Raises:
        RuntimeError: the process exited first.
        TimeoutError: nothing answered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")
