"""One trace from the HTTP request through the outbox publish to the consumer's handler,
visible with an in-memory exporter."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from events.bus import Broker, Consumer
from events.contracts import UserRegistered
from events.store import Store, Tx
from events.web import install_common
from tests.support.poll import eventually
from tests.support.service import running_app


def exporter() -> InMemorySpanExporter:
    """The process-wide tracer provider can be set once; reuse ours if it is there."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


async def test_span_chain_from_http_request_to_handler(
    mongo: Any, db_prefix: str, broker: Broker
) -> None:
    spans = exporter()
    store = Store(mongo, f"{db_prefix}traced", source="/users")
    await store.setup()
    app = FastAPI()
    install_common(app, "traced")

    @app.post("/register")
    async def register() -> dict[str, str]:
        async def work(tx: Tx) -> str:
            return await tx.record(UserRegistered(user_id="u1", username="a", email="a@x.io"))

        return {"event_id": await store.transaction(work)}

    handled = asyncio.Event()

    async def on_user_registered(event: UserRegistered, ctx: Any) -> None:
        handled.set()

    consumer = Consumer(broker, "traced-consumer", {UserRegistered: on_user_registered}, None)
    await consumer.start()
    relay = asyncio.create_task(store.outbox.run_relay(broker, poll_seconds=0.2))
    try:
        async with running_app(app) as client:
            assert (await client.post("/register")).status_code == 200
        await asyncio.wait_for(handled.wait(), 15)

        async def chain() -> dict[str, Any]:
            by_name = {s.name: s for s in spans.get_finished_spans()}
            names = {
                "POST /register",
                "publish UserRegistered",
                "traced-consumer handle UserRegistered",
            }
            return by_name if names <= by_name.keys() else {}

        by_name = await eventually(chain, what="three spans")
    finally:
        relay.cancel()
        await consumer.stop()
    http = by_name["POST /register"]
    publish = by_name["publish UserRegistered"]
    handle = by_name["traced-consumer handle UserRegistered"]
    assert http.context.trace_id == publish.context.trace_id == handle.context.trace_id
    # FastAPI's own server span (or an operation span inside it) recorded the event: the
    # publish and the handling continue that trace, from the span that was current then
    assert publish.parent is not None
    assert handle.parent is not None
    assert publish.parent.span_id == handle.parent.span_id
    assert http.kind == trace.SpanKind.SERVER
    assert handle.kind == trace.SpanKind.CONSUMER
