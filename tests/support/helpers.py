"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from events.cli import main
from events.contracts import CONTENT_TYPE, EXCHANGE, CloudEvent, Event


def via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


def target_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 5672


async def publish_raw(url: str, routing_key: str, body: bytes, *, message_id: str = "raw") -> None:
    """Publish bytes as any other producer could (used for poison messages)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(
            aio_pika.Message(
                body,
                content_type=CONTENT_TYPE,
                message_id=message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
            mandatory=False,
        )


async def publish_event(
    url: str,
    event: Event,
    *,
    event_id: str | None = None,
    correlationid: str | None = None,
    times: int = 1,
    source: str = "/tests",
) -> CloudEvent:
    """Publish a well-formed event ``times`` times with the same id (a duplicate delivery)."""
    envelope = CloudEvent.wrap(event, source=source, event_id=event_id, correlationid=correlationid)
    for _ in range(times):
        await publish_raw(url, event.ROUTING_KEY, envelope.to_json(), message_id=envelope.id)
    return envelope


async def queue_messages(url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything currently in ``queue``, fetched and requeued (an operator's peek)."""
    connection = await aio_pika.connect(url)
    out = []
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        while (message := await q.get(no_ack=False, fail=False)) is not None:
            out.append(message)
        for message in out:
            await message.nack(requeue=True)
    return out


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``python -m events <argv>`` in-process (in a thread: main() runs its own loop);
    returns the exit code and what it printed to stdout and stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err
