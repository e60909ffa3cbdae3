"""Prometheus metrics shared by every service (one registry per process)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram


class _Metrics:
    def __init__(self) -> None:
        self.messages = Counter(
            "eventshop_messages_total",
            "Messages handled by outcome",
            ["service", "event_type", "outcome"],
        )
        self.handler_seconds = Histogram(
            "eventshop_handler_seconds",
            "Handler duration for messages handled successfully",
            ["service", "event_type"],
        )
        self.outbox_backlog = Gauge(
            "eventshop_outbox_pending", "Events recorded but not yet published", ["service"]
        )
        self.outbox_lag = Histogram(
            "eventshop_outbox_publish_lag_seconds",
            "Time from an event's commit to the broker's confirm",
            ["service"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.published = Counter(
            "eventshop_events_published_total", "Events published from the outbox", ["service"]
        )

    @functools.cache  # noqa: B019 - one per process; .labels() costs microseconds per message
    def _consumed(self, service: str, event_type: str) -> tuple[Counter, Histogram]:
        return (
            self.messages.labels(service, event_type, "consumed"),
            self.handler_seconds.labels(service, event_type),
        )

    def consumed(self, service: str, event_type: str, seconds: float) -> None:
        counter, histogram = self._consumed(service, event_type)
        counter.inc()
        histogram.observe(seconds)

    def failed(self, service: str, event_type: str) -> None:
        self.messages.labels(service, event_type, "failed").inc()

    def retried(self, service: str, event_type: str) -> None:
        self.messages.labels(service, event_type, "retried").inc()

    def dead_lettered(self, service: str, event_type: str) -> None:
        self.messages.labels(service, event_type, "dead_lettered").inc()


METRICS = _Metrics()
