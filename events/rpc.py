"""Request/reply over RabbitMQ: JSON request to a named queue, the answer to ``reply_to``
with the same ``correlation_id``. Used by ``orders`` to ask ``recommender``."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from events import logs as elog
from events.bus import Broker

log = logging.getLogger("events.rpc")

RpcHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class RpcClient:
    """Calls ``queue`` and waits at most ``timeout`` seconds for the answer."""

    def __init__(self, broker: Broker, *, name: str) -> None:
        self.broker = broker
        # A fixed name (not server-named) so the robust connection redeclares the same
        # queue after a reconnect and ``reply_to`` stays valid.
        self.reply_queue_name = f"{name}.rpc-reply.{uuid.uuid4().hex[:12]}"
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def start(self) -> None:
        self._channel = await self.broker.connection.channel(publisher_confirms=False)
        self._queue = await self._channel.declare_queue(
            self.reply_queue_name, exclusive=True, auto_delete=True
        )
        await self._queue.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            return  # an answer that came after its caller gave up
        try:
            future.set_result(json.loads(message.body))
        except ValueError as exc:
            future.set_exception(exc)

    async def call(self, queue: str, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Raises ``TimeoutError`` when no answer comes in time."""
        if self._channel is None:
            raise RuntimeError("RpcClient.start() was not called")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(request).encode(),
                        content_type="application/json",
                        correlation_id=correlation_id,
                        reply_to=self.reply_queue_name,
                        # A request nobody answers in time is worthless: let it expire.
                        expiration=timeout,
                        headers={"correlationid": elog.correlation_id() or ""},
                    ),
                    routing_key=queue,
                    mandatory=False,
                )
                return await future
        finally:
            self._pending.pop(correlation_id, None)

    async def stop(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()


class RpcServer:
    """Answers requests arriving on ``queue`` with ``handler(request) -> reply``."""

    def __init__(self, broker: Broker, queue: str, handler: RpcHandler, *, prefetch: int = 32):
        self.broker = broker
        self.queue_name = queue
        self.handler = handler
        self.prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        self._channel = await self.broker.connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await self._channel.declare_queue(self.queue_name, durable=True)
        self._tag = await self._queue.consume(self._on_request)

    def is_healthy(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        correlationid = (message.headers or {}).get("correlationid") or None
        with elog.bind(correlationid=correlationid):
            try:
                request = json.loads(message.body)
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                reply = await self.handler(request)
            except Exception as exc:
                log.exception("rpc request on %s failed", self.queue_name)
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            if message.reply_to and self._channel is not None:
                await self._channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(reply, default=str).encode(),
                        content_type="application/json",
                        correlation_id=message.correlation_id,
                    ),
                    routing_key=message.reply_to,
                    mandatory=False,
                )
            await message.ack()

    async def stop(self) -> None:
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:
                log.debug("rpc cancel failed", exc_info=True)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
