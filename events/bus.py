"""The RabbitMQ bus: one robust connection, a confirming publisher, and consumers that turn
messages into calls of plain ``async def handler(event, ctx)`` functions.

Topology (declared idempotently by every consumer at start):

* ``shop.events`` — durable topic exchange every event is published to.
* ``<service>`` — durable quorum queue, bound with the routing keys of the service's
  subscriptions. ``x-delivery-limit`` plus at-least-once dead-lettering to ``<service>.dlq``
  is the safety net for a message that kills the process before it can be acked.
* ``<service>.retry.<ms>ms`` — one quorum queue per retry delay, no consumers: a message
  waits there for its TTL and is dead-lettered back to ``<service>``.
* ``<service>.dlq`` — the parking lot, with the error in the message headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError
from pydantic import ValidationError

from events import logs as elog
from events.contracts import (
    CONTENT_TYPE,
    EXCHANGE,
    CloudEvent,
    Event,
    UnknownEventType,
    parse,
)
from events.metrics import METRICS
from events.tracing import consume_span

log = logging.getLogger("events.bus")

#: Headers the bus writes; operators read them with ``python -m events dlq``.
H_ATTEMPT = "x-attempt"
H_ROUTING_KEY = "x-original-routing-key"
H_ERROR = "x-error"
H_ERROR_TYPE = "x-error-type"
H_FAILED_AT = "x-failed-at"
H_SERVICE = "x-service"

Handler = Callable[[Any, Any], Awaitable[None]]


def queue_arguments(service: str) -> dict[str, Any]:
    """Arguments of a service's main queue. RabbitMQ 3.10 needs each of them spelled out:
    without ``x-delivery-limit`` a quorum queue redelivers a crashing message forever, and
    without ``at-least-once`` (which requires ``reject-publish``) dead-lettering may lose it.
    """
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": 20,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq_name(service),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def dlq_name(service: str) -> str:
    return f"{service}.dlq"


def retry_queue_name(service: str, delay: float) -> str:
    return f"{service}.retry.{round(delay * 1000)}ms"


@dataclass(frozen=True)
class Delivery:
    """What the bus knows about the message being handled (read by the inbox and logs)."""

    event_id: str
    type: str
    source: str
    correlationid: str | None
    attempt: int
    routing_key: str
    traceparent: str | None = None
    #: The queue the broker dead-lettered this copy from (``x-death``), e.g. the retry
    #: queue whose TTL expired; None for a first delivery.
    via: str | None = None


_delivery: ContextVar[Delivery | None] = ContextVar("eventshop_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The message the current task is handling, if any."""
    return _delivery.get()


async def connect(url: str, *, name: str, attempts: int | None = None) -> AbstractRobustConnection:
    """Open a robust connection, retrying with backoff while the broker is not up yet.

    aio-pika's robust connection only recovers connections that once succeeded; a broker
    that is down at start-up is ours to wait for. ``attempts=None`` waits forever.
    """
    delay, tried = 0.5, 0
    while True:
        tried += 1
        try:
            return await aio_pika.connect_robust(
                url, client_properties={"connection_name": name}, timeout=10
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            if attempts is not None and tried >= attempts:
                raise
            log.warning(
                "RabbitMQ not reachable (%s); retrying in %.1fs",
                exc.__class__.__name__,
                delay,
                extra={"attempt": tried},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class Broker:
    """One connection per process and one long-lived publishing channel with confirms.

    Strong references to the channel and exchange are kept on purpose: robust objects held
    only weakly are not restored after a reconnect.
    """

    #: Publishes of one :meth:`publish_many` call in flight at once (awaiting confirms).
    PUBLISH_WINDOW = 1000

    def __init__(self, url: str, *, name: str) -> None:
        self.url = url
        self.name = name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def connect(self, *, attempts: int | None = None) -> None:
        self._connection = await connect(self.url, name=self.name, attempts=attempts)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("Broker.connect() was not called")
        return self._connection

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("Broker.connect() was not called")
        return self._channel

    def is_connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def publish(self, envelope: CloudEvent, routing_key: str, *, timeout: float = 10) -> None:
        """Publish one event persistently and wait for the broker's confirm."""
        if self._exchange is None:
            raise RuntimeError("Broker.connect() was not called")
        await self._exchange.publish(
            event_message(envelope.to_json(), envelope),
            routing_key=routing_key,
            mandatory=False,
            timeout=timeout,
        )

    async def publish_many(
        self, items: Sequence[tuple[CloudEvent, str]], *, timeout: float = 10
    ) -> list[BaseException | None]:
        """Publish concurrently and wait for all confirms; returns one error or None each.

        At most :attr:`PUBLISH_WINDOW` publishes are in flight at once, each awaited by one
        of that many workers: aiormq writes one publish at a time under the channel lock
        and a publish's ``timeout`` starts when it does, so gathering a large batch
        unbounded made the last ones time out while merely queued behind the first (20000
        at once: thousands of TimeoutErrors). Workers, rather than a semaphore in front of
        one task per event, keep the per-event cost as low as a plain gather.
        """
        results: list[BaseException | None] = [None] * len(items)
        pending = iter(enumerate(items))

        async def worker() -> None:
            for i, (envelope, key) in pending:
                try:
                    await self.publish(envelope, key, timeout=timeout)
                except Exception as exc:
                    results[i] = exc

        await asyncio.gather(*(worker() for _ in range(min(self.PUBLISH_WINDOW, len(items)))))
        return results

    async def send_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        """Publish straight to a queue (default exchange), confirmed: retries and the DLQ."""
        await self.channel.default_exchange.publish(
            message, routing_key=queue, mandatory=False, timeout=10
        )

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()


def event_message(
    body: bytes, envelope: CloudEvent, headers: Mapping[str, Any] | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=envelope.id,
        correlation_id=envelope.correlationid,
        type=envelope.type,
        headers=dict(headers or {}),
    )


class BadMessage(Exception):
    """A message that no retry can fix: it goes straight to the DLQ."""


class Consumer:
    """Consumes ``<service>``: validates each message into its event model, calls the
    handler, and acks only after the handler returned (its work is committed by then).

    A handler error is retried after ``retry_delays`` (through TTL queues), then parked
    in ``<service>.dlq`` with the error in its headers; a message that cannot be parsed is
    parked at once. Either way the consumer goes on with the next message.

    ``subscriptions`` maps event classes to handlers; the key :class:`CloudEvent` subscribes
    to every routing key (``#``) and hands the handler the raw envelope, known type or not.
    """

    def __init__(
        self,
        broker: Broker,
        service: str,
        subscriptions: Mapping[type[Event] | type[CloudEvent], Handler],
        ctx: Any,
        *,
        prefetch: int = 16,
        retry_delays: Sequence[float] = (1.0, 5.0, 30.0),
    ) -> None:
        self.broker = broker
        self.service = service
        self.ctx = ctx
        self.prefetch = prefetch
        self.retry_delays = tuple(retry_delays)
        self._catch_all = subscriptions.get(CloudEvent)
        self._by_type: dict[str, tuple[type[Event], Handler]] = {
            cls.type_name(): (cls, handler)
            for cls, handler in subscriptions.items()
            if issubclass(cls, Event)
        }
        self.routing_keys = (
            ["#"]
            if self._catch_all
            else sorted(cls.ROUTING_KEY for cls, _ in self._by_type.values())
        )
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await channel.declare_queue(
            dlq_name(self.service), durable=True, arguments={"x-queue-type": "quorum"}
        )
        for delay in self.retry_delays:
            await channel.declare_queue(
                retry_queue_name(self.service, delay),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": max(1, round(delay * 1000)),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.service,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        queue = await channel.declare_queue(
            self.service, durable=True, arguments=queue_arguments(self.service)
        )
        for key in self.routing_keys:
            await queue.bind(exchange, routing_key=key)
        return queue

    async def start(self) -> None:
        self._channel = await self.broker.connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await self.declare(self._channel)
        self._tag = await self._queue.consume(self._on_message)
        log.info(
            "consuming %s (routing keys %s, prefetch %d, %d attempts)",
            self.service,
            ", ".join(self.routing_keys),
            self.prefetch,
            self.max_attempts,
        )

    async def is_healthy(self) -> bool:
        """False once the consumer channel is closed (a broker-cancelled consumer included)."""
        if self._stopping or self._channel is None or self._channel.is_closed:
            return False
        if not self.broker.is_connected():
            return False
        try:
            # A Basic.Cancel from the broker (queue deleted, node lost) removes the tag
            # from the underlying channel while the channel itself stays open.
            underlay = await self._channel.get_underlay_channel()
            return self._tag in getattr(underlay, "consumers", {})
        except Exception:  # the underlying channel is gone: reconnecting
            return False

    async def stop(self, *, grace: float = 30.0) -> None:
        """Stop taking messages, let the ones in hand finish, close the channel."""
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # a closed channel has no consumer to cancel
                log.debug("cancel of %s failed", self.service, exc_info=True)
        if self._in_flight:
            log.info("waiting for %d message(s) in hand", len(self._in_flight))
            await asyncio.wait(self._in_flight, timeout=grace)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """Handle each message in a task of our own, and return at once. aio-pika runs
        this callback in tasks its channel cancels when the channel dies (the broker
        closed the connection); work half done there (a mail sent, not yet recorded) must
        finish, so the redelivery finds it done instead of doing it again. Our task is
        not the channel's to cancel; ``_process`` then neither acks nor settles on the
        dead channel."""
        task = asyncio.get_running_loop().create_task(self._process(message))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("message handling failed outside the handler: %r", exc, exc_info=exc)

    def _resolve(self, envelope: CloudEvent) -> tuple[Any, Handler]:
        entry = self._by_type.get(envelope.type)
        if entry is not None:
            cls, handler = entry
            return cls.model_validate(envelope.data), handler
        if self._catch_all is not None:
            return envelope, self._catch_all
        raise UnknownEventType(f"{self.service} has no handler for type {envelope.type!r}")

    async def _process(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        attempt = _int(headers.get(H_ATTEMPT), 1)
        routing_key = str(headers.get(H_ROUTING_KEY) or message.routing_key or "")
        try:
            envelope = parse(message.body)
            payload, handler = self._resolve(envelope)
        except (ValidationError, UnknownEventType, ValueError) as exc:
            with elog.bind(message_id=message.message_id, routing_key=routing_key):
                log.error("unparseable message, parking it in %s: %s", dlq_name(self.service), exc)
                await self._settle(message, routing_key, attempt, exc, park=True, event_type="?")
            return

        delivery = Delivery(
            event_id=envelope.id,
            type=envelope.type,
            source=envelope.source,
            correlationid=envelope.correlationid,
            attempt=attempt,
            routing_key=routing_key,
            traceparent=envelope.traceparent,
            via=_dead_lettered_from(headers),
        )
        token = _delivery.set(delivery)
        started = time.perf_counter()
        try:
            with elog.bind(
                correlationid=envelope.correlationid,
                event_id=envelope.id,
                event_type=envelope.type,
                attempt=attempt,
                order_id=envelope.data.get("order_id"),
                user_id=envelope.data.get("user_id"),
            ):
                try:
                    with consume_span(self.service, envelope):
                        await handler(payload, self.ctx)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    park = attempt >= self.max_attempts or isinstance(exc, BadMessage)
                    if park:
                        log.error(
                            "handler failed on attempt %d/%d, parking in %s: %r",
                            attempt,
                            self.max_attempts,
                            dlq_name(self.service),
                            exc,
                            exc_info=not isinstance(exc, BadMessage),
                        )
                    else:
                        log.warning(
                            "handler failed on attempt %d/%d, retrying in %.1fs: %r",
                            attempt,
                            self.max_attempts,
                            self.retry_delays[attempt - 1],
                            exc,
                        )
                    await self._settle(
                        message, routing_key, attempt, exc, park=park, event_type=envelope.type
                    )
                    return
                if _channel_gone(message):
                    # Handled, but the channel it came on is gone: the broker redelivers
                    # it, and the handler's idempotency makes that a no-op.
                    log.warning("handled after the channel closed; the broker redelivers it")
                    return
                await message.ack()
                METRICS.consumed(self.service, envelope.type, time.perf_counter() - started)
                log.info(
                    "handled %s in %.1f ms", envelope.type, (time.perf_counter() - started) * 1000
                )
        finally:
            _delivery.reset(token)

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        routing_key: str,
        attempt: int,
        exc: BaseException,
        *,
        park: bool,
        event_type: str,
    ) -> None:
        """Move a failed message on (to a retry queue or the DLQ), then ack it.

        Publish first, ack second: a crash in between delivers it twice, which the
        consumers' idempotency absorbs; the other order could lose it. On a channel that
        has died there is nothing to ack: the broker redelivers the message, so it is
        not moved on (that would make a second copy).
        """
        if _channel_gone(message):
            log.warning("the channel closed while handling; the broker redelivers the message")
            return
        headers = {k: v for k, v in (message.headers or {}).items() if k not in ("x-death",)}
        headers.update(
            {
                H_ROUTING_KEY: routing_key,
                H_SERVICE: self.service,
                H_ERROR: f"{type(exc).__name__}: {exc}"[:2000],
                H_ERROR_TYPE: type(exc).__name__,
                H_FAILED_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        if park:
            headers[H_ATTEMPT] = attempt
            target = dlq_name(self.service)
            METRICS.dead_lettered(self.service, event_type)
        else:
            headers[H_ATTEMPT] = attempt + 1
            target = retry_queue_name(self.service, self.retry_delays[attempt - 1])
            METRICS.retried(self.service, event_type)
        METRICS.failed(self.service, event_type)
        out = aio_pika.Message(
            message.body,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
            headers=headers,
        )
        try:
            await self.broker.send_to_queue(target, out)
            await message.ack()
        except Exception:
            # Nothing was acked: the broker redelivers it once the connection is back.
            log.exception("could not move the message to %s; leaving it unacked", target)
            try:
                await message.nack(requeue=True)
            except Exception:
                log.debug("nack failed", exc_info=True)


def _channel_gone(message: AbstractIncomingMessage) -> bool:
    """The channel ``message`` came on is closed: it can be neither acked nor settled."""
    try:
        return message.channel.is_closed
    except ChannelInvalidStateError:
        return True


def _dead_lettered_from(headers: Mapping[str, Any]) -> str | None:
    """The queue of the newest ``x-death`` entry: where this copy was dead-lettered from."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        queue = deaths[0].get("queue")
        return str(queue) if queue else None
    return None


def _int(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return default
