"""The orders database: the catalog, the orders, and the outbox/inbox from the kit."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from bson import Decimal128
from pydantic import AwareDatetime, BaseModel, ConfigDict
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError

from events.contracts import Money, utcnow
from events.store import Document, Store
from orders.catalog import Product

log = logging.getLogger("orders.store")

OrderStatus = Literal["pending", "paid", "payment_failed"]
PENDING: OrderStatus = "pending"

#: How many recent orders the popularity fallback looks at: enough to be representative,
#: few enough that a shop with millions of orders still answers at once.
POPULARITY_WINDOW = 2000


class OrderItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    product_id: str
    name: str
    quantity: int
    unit_price: Money


class Order(BaseModel):
    """An order as the API shows it (contract §2)."""

    model_config = ConfigDict(frozen=True)

    id: str
    user_id: str
    items: list[OrderItem]
    total: Money
    currency: str
    status: OrderStatus
    created_at: AwareDatetime
    updated_at: AwareDatetime


#: A position in a user's order list, newest first: (created_at, id) of the last order seen.
PageKey = tuple[datetime, str]


class Settled(enum.Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # not pending any more: a duplicate or a late, contrary result
    NOT_FOUND = "not_found"
    WRONG_USER = "wrong_user"


def page_key(key: PageKey) -> str:
    """``(created_at, id)`` as one string that sorts like the pair (UTC, fixed width)."""
    created_at, order_id = key
    moment = created_at.astimezone(UTC).replace(tzinfo=None)
    return f"{moment.isoformat(timespec='milliseconds')}Z|{order_id}"


def now_ms() -> datetime:
    """Now, cut to the millisecond MongoDB stores, so that what an API response shows
    equals what a later read (and a page cursor) sees."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class OrdersStore(Store):
    def __init__(
        self, client: AsyncMongoClient[Document], database: str, *, source: str = "/orders"
    ) -> None:
        super().__init__(client, database, source=source)
        self.products = self.db["products"]
        self.orders = self.db["orders"]

    async def setup(self) -> None:
        await super().setup()
        await self.products.create_index([("position", ASCENDING)])
        # One index serves "the caller's orders, newest first" at any depth: a page is one
        # range scan from the cursor, so 10k orders page as fast as 10. The order is kept in
        # a single field, ``page_key`` (creation time, then id, as one sortable string),
        # rather than (created_at, _id): the keyset condition is then a plain ``$lt``, which
        # every Mongo-wire server answers from the index, where the two-field form needs an
        # ``$or`` that some (SecantusDB) answer with a collection scan.
        await self.orders.create_index(
            [("user_id", ASCENDING), ("page_key", DESCENDING)], name="user_newest_first"
        )
        # An Idempotency-Key is unique per user; orders without one are not in the index.
        await self.orders.create_index(
            [("user_id", ASCENDING), ("idempotency_key", ASCENDING)],
            name="user_idempotency_key",
            unique=True,
            partialFilterExpression={"idempotency_key": {"$type": "string"}},
        )
        await self.orders.create_index([("created_at", DESCENDING)], name="newest_first")

    # -- catalog ---------------------------------------------------------------------------
    async def load_catalog(self, products: Sequence[Product]) -> None:
        """Upsert every product of the catalog file and drop those no longer in it.
        Idempotent, and safe when several replicas start at once (a lost upsert race is
        simply retried: the other replica wrote the same values)."""
        ops = [
            UpdateOne(
                {"_id": p.id},
                {
                    "$set": {
                        "name": p.name,
                        "category": p.category,
                        "price": Decimal128(p.price),
                        "currency": p.currency,
                        "position": position,
                    }
                },
                upsert=True,
            )
            for position, p in enumerate(products)
        ]
        for attempt in (1, 2, 3):
            try:
                await self.products.bulk_write(ops, ordered=False)
                break
            except BulkWriteError:
                if attempt == 3:
                    raise
                log.info("catalog upsert raced another replica; retrying")
        await self.products.delete_many({"_id": {"$nin": [p.id for p in products]}})
        log.info("catalog loaded: %d products", len(products))

    async def list_products(self, *, category: str | None = None) -> list[Product]:
        query: Document = {} if category is None else {"category": category}
        cursor = self.products.find(query).sort("position", ASCENDING)
        return [_product(doc) async for doc in cursor]

    async def get_product(self, product_id: str) -> Product | None:
        doc = await self.products.find_one({"_id": product_id})
        return None if doc is None else _product(doc)

    async def products_by_id(self, ids: Iterable[str]) -> dict[str, Product]:
        wanted = list(set(ids))
        return {
            doc["_id"]: _product(doc) async for doc in self.products.find({"_id": {"$in": wanted}})
        }

    # -- orders ----------------------------------------------------------------------------
    async def insert_order(
        self,
        order: Order,
        *,
        username: str,
        payment_method: str,
        idempotency_key: str | None,
        session: AsyncClientSession,
    ) -> None:
        doc: Document = {
            "_id": order.id,
            "user_id": order.user_id,
            "username": username,
            "items": [
                {
                    "product_id": item.product_id,
                    "name": item.name,
                    "quantity": item.quantity,
                    "unit_price": Decimal128(item.unit_price),
                }
                for item in order.items
            ],
            "total": Decimal128(order.total),
            "currency": order.currency,
            "payment_method": payment_method,
            "status": order.status,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "page_key": page_key((order.created_at, order.id)),
        }
        if idempotency_key is not None:
            doc["idempotency_key"] = idempotency_key
        await self.orders.insert_one(doc, session=session)

    async def products_bought(self, user_id: str, *, recent: int = 500) -> set[str]:
        """Products in the user's most recent orders. Computed here rather than with
        ``distinct("items.product_id")``, which SecantusDB answers with [] for array paths."""
        cursor = (
            self.orders.find({"user_id": user_id}, {"items.product_id": 1})
            .sort("page_key", DESCENDING)
            .limit(recent)
        )
        return {item["product_id"] async for doc in cursor for item in doc.get("items", [])}

    async def get_order(self, order_id: str, *, user_id: str) -> Order | None:
        """The order when ``user_id`` owns it; None when it is absent or someone else's."""
        doc = await self.orders.find_one({"_id": order_id, "user_id": user_id})
        return None if doc is None else _order(doc)

    async def find_by_idempotency_key(self, user_id: str, key: str) -> Order | None:
        doc = await self.orders.find_one({"user_id": user_id, "idempotency_key": key})
        return None if doc is None else _order(doc)

    def page_query(self, user_id: str, after: PageKey | None = None) -> Document:
        query: Document = {"user_id": user_id}
        if after is not None:
            query["page_key"] = {"$lt": page_key(after)}
        return query

    async def page_orders(
        self, user_id: str, *, limit: int, after: PageKey | None = None
    ) -> tuple[list[Order], PageKey | None]:
        """Up to ``limit`` of the user's orders, newest first, after ``after``; and the key
        of the next page (None on the last one)."""
        cursor = (
            self.orders.find(self.page_query(user_id, after))
            .sort("page_key", DESCENDING)
            .limit(limit + 1)
        )
        orders = [_order(doc) async for doc in cursor]
        if len(orders) <= limit:
            return orders, None
        last = orders[limit - 1]
        return orders[:limit], (last.created_at, last.id)

    async def settle(
        self,
        order_id: str,
        *,
        user_id: str,
        status: OrderStatus,
        payment: Document,
        session: AsyncClientSession,
    ) -> tuple[Settled, OrderStatus | None]:
        """Move a pending order to ``status``; an order that is not pending any more keeps
        its status, so no sequence of payment results can move it backwards."""
        doc = await self.orders.find_one(
            {"_id": order_id}, {"user_id": 1, "status": 1}, session=session
        )
        if doc is None:
            return Settled.NOT_FOUND, None
        if doc["user_id"] != user_id:
            return Settled.WRONG_USER, doc["status"]
        result = await self.orders.update_one(
            {"_id": order_id, "status": PENDING},
            {"$set": {"status": status, "updated_at": now_ms(), "payment": payment}},
            session=session,
        )
        if result.modified_count == 0:
            return Settled.UNCHANGED, doc["status"]
        return Settled.CHANGED, status

    async def popular_products(self, limit: int) -> list[tuple[str, int]]:
        """``(product_id, units)`` most ordered among recent orders that did not fail."""
        pipeline: list[Document] = [
            {"$sort": {"created_at": DESCENDING}},
            {"$limit": POPULARITY_WINDOW},
            {"$match": {"status": {"$ne": "payment_failed"}}},
            {"$unwind": "$items"},
            {"$group": {"_id": "$items.product_id", "units": {"$sum": "$items.quantity"}}},
            {"$sort": {"units": DESCENDING, "_id": ASCENDING}},
            {"$limit": limit},
        ]
        cursor = await self.orders.aggregate(pipeline)
        return [(doc["_id"], int(doc["units"])) async for doc in cursor]


def _decimal(value: Any) -> Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))


def _product(doc: Document) -> Product:
    return Product(
        id=doc["_id"],
        name=doc["name"],
        category=doc["category"],
        price=_decimal(doc["price"]),
        currency=doc["currency"],
    )


def _order(doc: Document) -> Order:
    return Order(
        id=doc["_id"],
        user_id=doc["user_id"],
        items=[
            OrderItem(
                product_id=item["product_id"],
                name=item["name"],
                quantity=item["quantity"],
                unit_price=_decimal(item["unit_price"]),
            )
            for item in doc["items"]
        ],
        total=_decimal(doc["total"]),
        currency=doc["currency"],
        status=doc["status"],
        created_at=doc["created_at"].astimezone(UTC),
        updated_at=doc["updated_at"].astimezone(UTC),
    )
