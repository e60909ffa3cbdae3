"""Operator access to the parking lots (``<service>.dlq``): count, look, replay, purge.

Looking never consumes: messages are fetched with ``basic.get`` and handed back with
``nack(requeue=True)``. Replaying publishes a message to the service's own queue through
the default exchange with publisher confirms, and acks it in the DLQ only after the broker
confirmed the copy — a crash in between leaves a duplicate, which the consumers'
idempotency absorbs, never a loss. Counting uses a passive queue declaration, so no
management plugin is needed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity

from events.bus import (
    H_ATTEMPT,
    H_ERROR,
    H_ERROR_TYPE,
    H_FAILED_AT,
    H_ROUTING_KEY,
    H_SERVICE,
    dlq_name,
)

#: Header stamped on a replayed message, so its history stays visible.
H_REPLAYED_AT = "x-replayed-at"

#: Headers that describe a failure (ours and the broker's); a replay starts afresh without them.
FAILURE_HEADERS = frozenset(
    {
        H_ATTEMPT,
        H_ERROR,
        H_ERROR_TYPE,
        H_FAILED_AT,
        H_SERVICE,
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


#: How much of a parked message's body ``dlq show --json`` includes.
BODY_PREVIEW = 4000


class OperatorError(Exception):
    """Something the operator has to fix (a queue that does not exist, an unreachable
    broker); the message says what."""


@dataclass(frozen=True)
class Parked:
    """What an operator needs to know about one parked message."""

    id: str | None
    type: str | None
    routing_key: str | None
    attempts: int | None
    error: str | None
    failed_at: str | None
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The body as text (cut at :data:`BODY_PREVIEW` characters): what an unparseable
    #: message really held.
    body: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(message: AbstractIncomingMessage) -> Parked:
    """Read a parked message's headers (and, where they are silent, its body)."""
    headers = dict(message.headers or {})
    body = _body_fields(message.body)
    return Parked(
        id=message.message_id or body.get("id"),
        type=message.type or body.get("type"),
        routing_key=original_routing_key(message),
        attempts=_int_or_none(headers.get(H_ATTEMPT)),
        error=_text(headers.get(H_ERROR)) or _death_reason(headers),
        failed_at=_text(headers.get(H_FAILED_AT)),
        correlation_id=message.correlation_id or body.get("correlationid"),
        headers={k: _plain(v) for k, v in headers.items()},
        body=message.body[:BODY_PREVIEW].decode(errors="replace"),
    )


def original_routing_key(message: AbstractIncomingMessage) -> str | None:
    """The routing key the event was first published with: our header, else the broker's
    ``x-death`` record (a message the broker dead-lettered itself, e.g. at the delivery
    limit), else None."""
    headers = message.headers or {}
    key = _text(headers.get(H_ROUTING_KEY))
    if key:
        return key
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple):
        for death in reversed(deaths):
            keys = death.get("routing-keys") if isinstance(death, dict) else None
            if isinstance(keys, list | tuple) and keys:
                return _text(keys[0])
    return None


def replay_message(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The copy that goes back to the service: same body and properties, the original
    routing key kept in ``x-original-routing-key``, the failure headers removed (so the
    attempt counter starts again at 1)."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in FAILURE_HEADERS}
    key = original_routing_key(message)
    if key:
        headers[H_ROUTING_KEY] = key
    headers[H_REPLAYED_AT] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )


@dataclass
class ReplayReport:
    replayed: list[Parked] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)


class DeadLetters:
    """The parking lots of one broker (the vhost of its URL)."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, timeout: float = 10) -> AsyncIterator[DeadLetters]:
        try:
            connection = await aio_pika.connect(
                url, timeout=timeout, client_properties={"connection_name": "events-dlq-cli"}
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise OperatorError(
                f"cannot reach RabbitMQ at {redact(url)} ({type(exc).__name__}: {exc}); "
                "check AMQP_URL and that the broker is up"
            ) from exc
        try:
            yield cls(connection)
        finally:
            await connection.close()

    async def count(self, queue: str) -> int | None:
        """Messages ready in ``queue``, or None when there is no such queue."""
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()
        result = declared.declaration_result
        return int(result.message_count or 0)

    async def require(self, queue: str) -> int:
        count = await self.count(queue)
        if count is None:
            raise OperatorError(
                f"there is no queue {queue!r} on this vhost; is the service name right, and "
                "has the service started once (it declares its queues at start)?"
            )
        return count

    async def peek(self, service: str, *, limit: int) -> list[Parked]:
        """The first ``limit`` parked messages of ``service``, left where they are."""
        queue_name = dlq_name(service)
        await self.require(queue_name)
        channel = await self.connection.channel()
        held: list[AbstractIncomingMessage] = []
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            while len(held) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            return [describe(m) for m in held]
        finally:
            await _give_back(held)
            await channel.close()

    async def replay(self, service: str, *, ids: Collection[str] | None = None) -> ReplayReport:
        """Move parked messages of ``service`` (all, or those whose id is in ``ids``) back
        to its queue. Only the messages parked when the replay started are looked at, so a
        message that fails again and comes back cannot keep the replay going forever."""
        queue_name = dlq_name(service)
        parked = await self.require(queue_name)
        await self.require(service)
        wanted = set(ids) if ids is not None else None
        report = ReplayReport()
        channel = await self.connection.channel(publisher_confirms=True)
        held: list[AbstractIncomingMessage] = []
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            for _ in range(parked):
                if wanted is not None and len(report.replayed) == len(wanted):
                    break
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                info = describe(message)
                if wanted is not None and not (wanted & {info.id, message.message_id}):
                    held.append(message)
                    continue
                try:
                    # mandatory: a copy the broker cannot route is an error, not a silent drop
                    await channel.default_exchange.publish(
                        replay_message(message), routing_key=service, mandatory=True, timeout=10
                    )
                except Exception as exc:
                    held.append(message)
                    raise OperatorError(
                        f"could not republish {info.id} to {service!r} ({exc!r}); it stays in "
                        f"{queue_name}, {len(report.replayed)} replayed before it"
                    ) from exc
                await message.ack()
                report.replayed.append(info)
        finally:
            await _give_back(held)
            await channel.close()
        if wanted is not None:
            found = {p.id for p in report.replayed}
            report.not_found = sorted(wanted - found)
        return report

    async def purge(self, service: str) -> int:
        """Drop every parked message of ``service``; returns how many."""
        queue_name = dlq_name(service)
        await self.require(queue_name)
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            result = await queue.purge()
            return int(getattr(result, "message_count", 0) or 0)
        finally:
            await channel.close()


async def _give_back(messages: list[AbstractIncomingMessage]) -> None:
    for message in messages:
        try:
            await message.nack(requeue=True)
        except Exception:  # a closed channel returns them anyway
            break
    messages.clear()


def redact(url: str) -> str:
    """The URL without its password, for messages an operator may paste somewhere."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def _body_fields(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("id", "type", "correlationid") if isinstance(data.get(k), str)}


def _death_reason(headers: dict[str, Any]) -> str | None:
    reason = _text(headers.get("x-first-death-reason"))
    return f"dead-lettered by the broker: {reason}" if reason else None


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _plain(value: object) -> Any:
    """Header values as JSON-friendly types (AMQP tables hold bytes, datetimes, ...)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
