"""MongoDB plumbing every service shares: connecting, transactions, the transactional
outbox (events recorded with the state change) and the inbox (effects once per event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from events.bus import current_delivery
from events.outbox import Outbox

log = logging.getLogger("events.store")

T = TypeVar("T")
Document = dict[str, Any]


async def connect_mongo(
    url: str, *, name: str, attempts: int | None = None
) -> AsyncMongoClient[Document]:
    """A client whose server answered a ping, retrying with backoff while it is not up."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        url, appname=name, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    delay, tried = 0.5, 0
    while True:
        tried += 1
        try:
            await client.admin.command("ping")
            return client
        except PyMongoError as exc:
            if attempts is not None and tried >= attempts:
                await client.close()
                raise
            log.warning(
                "MongoDB not reachable (%s); retrying in %.1fs",
                exc.__class__.__name__,
                delay,
                extra={"attempt": tried},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


@dataclass
class Tx:
    """One open transaction: pass ``session`` to every write, ``record()`` events."""

    session: AsyncClientSession
    outbox: Outbox
    recorded: list[str] = field(default_factory=list)

    async def record(self, event: Any, *, event_id: str | None = None) -> str:
        """Record ``event`` in the outbox inside this transaction; returns its id."""
        env_id = await self.outbox.record(self.session, event, event_id=event_id)
        self.recorded.append(env_id)
        return env_id


class AlreadyHandled(Exception):
    """Raised inside a transaction when the inbox already holds the event id."""


class Store:
    """Base of each service's store: its own database, transactions, outbox and inbox."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        source: str,
        serial_writes: bool = False,
    ) -> None:
        """``serial_writes``: run this process's transactions one at a time. For stores
        whose every event updates the same few hot documents (daily totals, popular items):
        concurrent transactions there only conflict and retry each other into a storm.
        Deliveries still arrive prefetched; other replicas are resolved by the server's
        write-conflict retry."""
        self.client = client
        self.db: AsyncDatabase[Document] = client[database]
        self.outbox = Outbox(self.db["outbox"], source=source)
        self.inbox = self.db["inbox"]
        self._writer: asyncio.Lock | None = asyncio.Lock() if serial_writes else None

    async def setup(self) -> None:
        """Create indexes (idempotent). Subclasses extend it with their own collections."""
        await self.outbox.setup()

    async def transaction(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction (retried on transient errors) and wake the outbox
        relay after the commit, so events leave without waiting for a poll."""
        txs: list[Tx] = []

        async def callback(session: AsyncClientSession) -> T:
            tx = Tx(session=session, outbox=self.outbox)
            txs.append(tx)
            return await work(tx)

        async with self._writer or contextlib.nullcontext(), self.client.start_session() as session:
            result = await session.with_transaction(callback)
        if txs and txs[-1].recorded:
            self.outbox.notify()
        return result

    async def handle_once(self, work: Callable[[Tx], Awaitable[None]]) -> bool:
        """Run a handler's database work at most once per event id, in one transaction with
        the inbox record. Returns False when the event was handled before."""
        delivery = current_delivery()
        if delivery is None:
            raise RuntimeError("handle_once() outside a message handler")

        async def once(tx: Tx) -> None:
            try:
                await self.inbox.insert_one(
                    {"_id": delivery.event_id, "type": delivery.type, "at": _now()},
                    session=tx.session,
                )
            except DuplicateKeyError as exc:
                raise AlreadyHandled(delivery.event_id) from exc
            await work(tx)

        try:
            await self.transaction(once)
        except AlreadyHandled:
            log.info("event %s was handled before; skipping", delivery.event_id)
            return False
        return True

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
        except PyMongoError:
            return False
        return True


def _now() -> Any:
    from events.contracts import utcnow

    return utcnow()
