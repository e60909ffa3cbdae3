"""The analytics database: the append-only event log and the aggregates built from it.

* ``events``   — every event once, keyed by its id (the whole envelope in ``body``).
* ``daily``, ``products``, ``counters``, ``types`` — pre-aggregated reports, updated with
  ``$inc`` in the same transaction as the log insert (see :mod:`analytics.aggregates`).
* ``orders``, ``users`` — join state: what has been seen of each order and user, so a
  payment can meet its order whichever arrives first. ``orders.latency_us`` holds the time
  from ``order.created`` to the payment result; its index makes percentiles a few seeks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from analytics.aggregates import (
    AGGREGATES,
    Fold,
    OrderState,
    Record,
    UserState,
    contribute,
    order_id_of,
    user_id_of,
)
from events.contracts import CloudEvent, utcnow
from events.store import Document, Store, Tx

T = TypeVar("T")

#: Everything a rebuild recomputes from the log.
DERIVED = (*AGGREGATES, "orders", "users")


class AlreadyStored(Exception):
    """The event log holds this event id already."""


class AnalyticsStore(Store):
    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        super().__init__(client, database, source="/analytics", serial_writes=True)
        self.events = self.db["events"]
        self.orders = self.db["orders"]
        self.users = self.db["users"]
        self.daily = self.db["daily"]
        self.products = self.db["products"]
        self.counters = self.db["counters"]
        self.types = self.db["types"]

    async def setup(self) -> None:
        await super().setup()
        await self.events.create_index([("time", ASCENDING), ("_id", ASCENDING)])
        await self.events.create_index([("type", ASCENDING), ("time", ASCENDING)])
        await self.orders.create_index([("latency_us", ASCENDING)], sparse=True)
        await self.products.create_index([("quantity", DESCENDING), ("_id", ASCENDING)])

    async def record(
        self,
        envelope: CloudEvent,
        *,
        routing_key: str | None = None,
        received_at: datetime | None = None,
    ) -> bool:
        """Store ``envelope`` in the log and add it to every aggregate, in one transaction.
        Returns False (and changes nothing) when the log already holds its id."""
        record = Record.of(envelope)
        entry = record.log_document(received_at=received_at or utcnow(), routing_key=routing_key)

        async def work(tx: Tx) -> None:
            try:
                await self.events.insert_one(entry, session=tx.session)
            except DuplicateKeyError as exc:
                raise AlreadyStored(record.id) from exc
            await self._apply(record, tx.session)

        try:
            await self.transaction(work)
        except AlreadyStored:
            return False
        return True

    async def _apply(self, record: Record, session: AsyncClientSession) -> None:
        order_id, user_id = order_id_of(record), user_id_of(record)
        order = user = None
        if order_id and (doc := await self.orders.find_one({"_id": order_id}, session=session)):
            order = OrderState.from_doc(doc)
        if user_id and (doc := await self.users.find_one({"_id": user_id}, session=session)):
            user = UserState.from_doc(doc)
        step = contribute(record, order, user)
        for (collection, doc_id), fields in step.increments.items():
            await self.db[collection].update_one(
                {"_id": doc_id}, {"$inc": fields}, upsert=True, session=session
            )
        if step.order is not None:
            await self.orders.replace_one(
                {"_id": step.order.order_id}, step.order.to_doc(), upsert=True, session=session
            )
        if step.user is not None:
            await self.users.replace_one(
                {"_id": step.user.user_id}, step.user.to_doc(), upsert=True, session=session
            )

    async def rebuild(self) -> int:
        """Recompute every aggregate from the event log; returns how many events it read.

        One transaction: readers never see half a rebuild, and a live consumer committing
        meanwhile conflicts with it (every event touches ``counters/events``), so one of
        the two retries and no event is lost or counted twice."""

        async def work(tx: Tx) -> int:
            fold = Fold()
            count = 0
            cursor = self.events.find({}, {"body": 1}, session=tx.session).sort(
                [("time", ASCENDING), ("_id", ASCENDING)]
            )
            async for doc in cursor:
                fold.add(Record.from_log(doc))
                count += 1
            rebuilt: dict[str, list[dict[str, Any]]] = {
                name: list(fold.documents(name)) for name in AGGREGATES
            }
            rebuilt["orders"] = [state.to_doc() for state in fold.orders.values()]
            rebuilt["users"] = [state.to_doc() for state in fold.users.values()]
            for name in DERIVED:
                await self.db[name].delete_many({}, session=tx.session)
                if rebuilt[name]:
                    await self.db[name].insert_many(rebuilt[name], session=tx.session)
            return count

        return await self.transaction(work)

    async def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every derived document, sorted by id (to compare a rebuild with the live path)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name in DERIVED:
            out[name] = [doc async for doc in self.db[name].find({}).sort("_id", ASCENDING)]
        return out
