"""The recommender's database: what it learned from paid orders.

* ``orders``    — ``{_id: order_id, user_id, products, created, paid, learned}``: joins
  ``order.created`` (what was bought) with ``payment.completed`` (it was paid), whichever
  arrives first; an order is learned from once.
* ``customers`` — ``{_id: user_id, products: [...]}``: what each customer owns, oldest first.
* ``items``     — ``{_id: product_id, buyers, together: [{id, n}], neighbours:
  [{product_id, score}]}``: how many customers bought the item, how many bought it together
  with each other item (its row of the item-item table), and its precomputed most similar
  items.

Learning reads and writes only the items of one order and their partners (a handful of
documents, bounded by the catalog); answering reads one customer document and the
neighbour lists of that customer's purchases. Neither looks at other customers, so neither
slows down as the number of customers grows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from events.store import Document, Store, Tx
from recommender.similarity import Scored, affected, learn, rank, top_neighbours

log = logging.getLogger("recommender.store")

T = TypeVar("T")
ITEM_CF, POPULAR = "item-cf", "popular"
Answer = tuple[list[Scored], str]


@dataclass
class Row:
    """One item's row of the item-item table: its buyers and its co-purchase counts."""

    buyers: int = 0
    together: dict[str, int] = field(default_factory=dict)


class RecommenderStore(Store):
    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        neighbours: int = 50,
        history: int = 100,
    ) -> None:
        super().__init__(client, database, source="/recommender", serial_writes=True)
        self.neighbours = neighbours
        self.history = history
        self.orders = self.db["orders"]
        self.customers = self.db["customers"]
        self.items = self.db["items"]

    async def setup(self) -> None:
        await super().setup()
        await self.items.create_index([("buyers", DESCENDING), ("_id", ASCENDING)])

    # -- learning (inside the handler's transaction) -------------------------------------
    async def order_created(
        self, tx: Tx, order_id: str, user_id: str, products: Sequence[str]
    ) -> bool:
        """Remember what an order holds; learn from it if its payment came first."""
        fields = {"user_id": user_id, "products": list(products), "created": True}
        return await self._note(tx, order_id, fields)

    async def order_paid(self, tx: Tx, order_id: str) -> bool:
        """Mark an order paid; learn from it if its items are known already."""
        return await self._note(tx, order_id, {"paid": True})

    async def _note(self, tx: Tx, order_id: str, fields: Document) -> bool:
        """Set ``fields`` on the order (created if new), then learn from it once both its
        items and its payment are known, whichever came first."""
        # update + find rather than find_one_and_update: SecantusDB serves the latter on an
        # existing document with a collection scan (~40 ms at 3k orders; docs/benchmarks.md).
        await self.orders.update_one(
            {"_id": order_id}, {"$set": fields}, upsert=True, session=tx.session
        )
        order = await self.orders.find_one({"_id": order_id}, session=tx.session)
        return await self._learn_if_paid(order, tx.session)

    async def _learn_if_paid(self, order: Document | None, session: AsyncClientSession) -> bool:
        if (
            order is None
            or not (order.get("created") and order.get("paid"))
            or order.get("learned")
        ):
            return False
        await self._learn(order["user_id"], order["products"], session)
        await self.orders.update_one(
            {"_id": order["_id"]}, {"$set": {"learned": True}}, session=session
        )
        log.info("learned from paid order %s", order["_id"])
        return True

    async def _learn(
        self, customer: str, products: Sequence[str], session: AsyncClientSession
    ) -> None:
        doc = await self.customers.find_one({"_id": customer}, session=session)
        change = learn(doc["products"] if doc else [], products)
        if not change.new_items:
            return  # bought again: a binary customer vector does not change
        await self.customers.update_one(
            {"_id": customer},
            {"$push": {"products": {"$each": list(change.new_items)}}},
            upsert=True,
            session=session,
        )
        # The rows of the item-item table this order changes, updated in memory...
        changed = set(change.new_items) | {a for a, _ in change.pairs}
        rows = await self._rows(changed, session)
        for item in change.new_items:
            rows[item].buyers += 1
        for a, b in change.pairs:
            rows[a].together[b] = rows[a].together.get(b, 0) + 1
        # ...and every row whose neighbour list they change (a new buyer of x moves the
        # cosine of x with each of its partners).
        together = {item: row.together for item, row in rows.items()}
        dirty = affected(change, together)
        rows.update(await self._rows(dirty - rows.keys(), session))
        partners = set().union(*(rows[item].together for item in dirty)) - rows.keys()
        buyers = {item: row.buyers for item, row in rows.items()}
        buyers.update(await self._buyers(partners, session))
        updates = []
        for item in sorted(dirty):
            row = rows[item]
            fields: dict[str, object] = {
                "neighbours": [
                    {"product_id": n.product_id, "score": n.score}
                    for n in top_neighbours(row.buyers, row.together, buyers, self.neighbours)
                ]
            }
            if item in changed:
                fields["buyers"] = row.buyers
                fields["together"] = [
                    {"id": other, "n": n} for other, n in sorted(row.together.items())
                ]
            updates.append(UpdateOne({"_id": item}, {"$set": fields}, upsert=True))
        await self.items.bulk_write(updates, session=session)

    async def _rows(self, items: Iterable[str], session: AsyncClientSession) -> dict[str, Row]:
        wanted = sorted(items)
        rows = {item: Row() for item in wanted}
        if wanted:
            cursor = self.items.find(
                {"_id": {"$in": wanted}}, {"buyers": 1, "together": 1}, session=session
            )
            async for doc in cursor:
                rows[doc["_id"]] = Row(
                    buyers=doc.get("buyers", 0),
                    together={t["id"]: t["n"] for t in doc.get("together", [])},
                )
        return rows

    async def _buyers(self, items: Iterable[str], session: AsyncClientSession) -> dict[str, int]:
        wanted = sorted(items)
        if not wanted:
            return {}
        cursor = self.items.find({"_id": {"$in": wanted}}, {"buyers": 1}, session=session)
        return {doc["_id"]: doc.get("buyers", 0) async for doc in cursor}

    # -- answering ------------------------------------------------------------------------
    async def recommend(self, user_id: str, limit: int) -> Answer:
        """Items ``user_id`` does not own, ranked by summed similarity to their latest
        purchases (``item-cf``); the most bought items when that finds nothing."""
        doc = await self.customers.find_one({"_id": user_id})
        owned: list[str] = doc["products"] if doc else []
        if owned:
            recent = owned[-self.history :]
            lists: dict[str, list[Scored]] = {}
            async for item in self.items.find({"_id": {"$in": recent}}, {"neighbours": 1}):
                lists[item["_id"]] = [
                    Scored(product_id=n["product_id"], score=n["score"])
                    for n in item.get("neighbours", [])
                ]
            found = rank(owned, (lists.get(item, []) for item in recent), limit)
            if found:
                return found, ITEM_CF
        return await self.popular(owned, limit), POPULAR

    async def popular(self, exclude: Sequence[str], limit: int) -> list[Scored]:
        """The items most customers bought (an indexed sort, not a scan)."""
        cursor = (
            self.items.find({"_id": {"$nin": list(exclude)}, "buyers": {"$gt": 0}}, {"buyers": 1})
            .sort([("buyers", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [Scored(product_id=doc["_id"], score=float(doc["buyers"])) async for doc in cursor]
