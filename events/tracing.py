"""OpenTelemetry spans across HTTP -> outbox -> broker -> handler.

The W3C ``traceparent`` of the span that recorded an event travels in the event
(CloudEvents distributed-tracing extension); the consumer continues that trace. With no
``OTEL_*`` exporter configured the API's no-op tracer makes all of this free.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace

from events.contracts import CloudEvent

_tracer = trace.get_tracer("eventshop")


def configure_tracing(service: str) -> None:
    """Install an SDK tracer provider when an OTLP endpoint or console export is asked for
    through the standard variables; otherwise leave the no-op provider in place."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if exporter_name in ("", "none") and not endpoint:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _tracing_off() -> bool:
    """True while no SDK tracer provider is installed (every span would be a no-op)."""
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def consume_span(service: str, envelope: CloudEvent) -> Iterator[None]:
    if envelope.traceparent is None and _tracing_off():
        # Nothing to record and no trace to continue: the no-op span would still cost
        # ~28 us per message, more than half of the consumer's own work (bench/bus.py).
        yield
        return
    parent = (
        propagate.extract({"traceparent": envelope.traceparent}) if envelope.traceparent else None
    )
    with _tracer.start_as_current_span(
        f"{service} handle {envelope.type}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": service,
            "messaging.message.id": envelope.id,
            "cloudevents.event_type": envelope.type,
        },
    ):
        yield


def publish_span(envelope: CloudEvent, routing_key: str) -> trace.Span:
    """A span for the relay's publish of a stored event, a child of the span that recorded
    it (the relay runs later, in its own task). The caller ends it."""
    parent = (
        propagate.extract({"traceparent": envelope.traceparent}) if envelope.traceparent else None
    )
    return _tracer.start_span(
        f"publish {envelope.type}",
        context=parent,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": routing_key,
            "messaging.message.id": envelope.id,
        },
    )
