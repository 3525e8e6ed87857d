"""``GET /metrics``: the engine's state in Prometheus' text format, read at scrape time.

Nothing is counted in process memory: every figure is a query on the database (the
source of truth) or the broker when Prometheus scrapes, so any number of web processes
answer the same, and a restart resets nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from engine.analytics import variant_counts
from engine.queues import backlog, queue_depths
from engine.services import Services
from engine.storage.models import Delivery, Enrollment, Event

log = logging.getLogger(__name__)

#: The states ``journey_queue_messages`` reports for each queue.
QUEUE_STATES = ("ready", "delayed", "in_flight", "dead")


class EngineCollector(Collector):
    """Queries the database and the broker for every scrape."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        """Yield the metrics; a broker that cannot be reached only drops the queue metrics."""
        now = self.services.clock()
        with self.services.sessions() as session:
            ingested, processed = session.execute(
                select(func.count(), func.count(Event.processed_at))
            ).one()
            enrollments = session.execute(
                select(Enrollment.journey_id, Enrollment.status, Enrollment.step, func.count())
                .group_by(Enrollment.journey_id, Enrollment.status, Enrollment.step)
            ).all()
            deliveries = session.execute(
                select(Delivery.channel, Delivery.status, func.count()).group_by(Delivery.channel, Delivery.status)
            ).all()
            work = backlog(session, now)
            variants = variant_counts(session)

        yield CounterMetricFamily("journey_events_ingested", "Events accepted by the API.", value=ingested)
        yield CounterMetricFamily("journey_events_processed", "Events applied by the workers.", value=processed)
        yield GaugeMetricFamily("journey_events_pending", "Events accepted and not processed yet.",
                                value=work.events_pending)
        yield GaugeMetricFamily("journey_events_failing", "Pending events whose processing failed at least once.",
                                value=work.events_failing)

        by_step = GaugeMetricFamily(
            "journey_enrollments", "Enrollments by journey, status and step (the step of active ones; empty once ended).",
            labels=["journey", "status", "step"],
        )
        for journey, status, step, count in enrollments:
            by_step.add_metric([journey, status, (step or "") if status == "active" else ""], count)
        yield by_step

        by_variant = GaugeMetricFamily(
            "journey_variant_enrollments", "Enrollments by journey, split step, variant (the path taken) and status.",
            labels=["journey", "split", "variant", "status"],
        )
        for journey, split, variant, status, count in variants:
            by_variant.add_metric([journey, split, variant, status], count)
        yield by_variant

        sends = GaugeMetricFamily("journey_deliveries", "Deliveries by channel and status.", labels=["channel", "status"])
        for channel, status, count in deliveries:
            sends.add_metric([channel, status], count)
        yield sends

        yield GaugeMetricFamily("journey_timers_due", "Timers due and not fired yet.", value=work.timers_due)
        yield GaugeMetricFamily(
            "journey_scheduler_lag_seconds", "How long the oldest due timer has been waiting to fire (0 when none is due).",
            value=work.scheduler_lag_seconds,
        )

        try:
            depths = queue_depths(self.services.broker)
        except Exception:  # noqa: BLE001 - Redis down must not hide the database's figures
            log.warning("could not read the queue depths", exc_info=True)
            return
        queues = GaugeMetricFamily("journey_queue_messages", "Broker messages by queue and state.",
                                   labels=["queue", "state"])
        for depth in depths:
            for state in QUEUE_STATES:
                if getattr(depth, state) is not None:  # RabbitMQ does not tell what is in flight
                    queues.add_metric([depth.name, state], getattr(depth, state))
        yield queues


def make_registry(services: Services) -> CollectorRegistry:
    """A registry of this engine's own (not prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(services))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in Prometheus' text exposition format."""
    return generate_latest(registry)
