"""Watch what really goes over the broker: an exclusive queue bound to ``shop.events``."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from events.contracts import EXCHANGE
from tests.support.poll import eventually


class EventTap:
    def __init__(self, url: str, routing_key: str = "#") -> None:
        self.url = url
        self.routing_key = routing_key
        self.messages: list[AbstractIncomingMessage] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> EventTap:
        self._connection = await aio_pika.connect(self.url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(exchange, self.routing_key)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(m.body) for m in self.messages]
        return [e for e in out if type_ is None or e.get("type") == type_]

    async def wait_for(
        self, type_: str, count: int = 1, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]]:
            found = self.events(type_)
            return found if len(found) >= count else []

        return await eventually(enough, timeout=timeout, what=f"{count} x {type_}")

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
