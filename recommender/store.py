"""The recommender's database: what it learned from paid orders.

* ``orders``    — ``{_id: order_id, user_id, products, created, paid, learned}``: joins
  ``order.created`` (what was bought) with ``payment.completed`` (it was paid), whichever
  arrives first; an order is learned from once.
* ``customers`` — ``{_id: user_id, products: [...]}``: what each customer owns, oldest first.
* ``items``     — ``{_id: product_id, buyers, neighbours: [{product_id, score}]}``: how many
  customers bought the item, and its precomputed most similar items.
* ``pairs``     — ``{a, b, n}``: how many customers bought both ``a`` and ``b`` (symmetric).

Learning touches only the items of one order and their partners; answering reads one
customer document and the neighbour lists of that customer's purchases. Neither looks at
other customers, so neither slows down as the number of customers grows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from events.store import Document, Store, Tx
from recommender.similarity import Scored, affected, learn, rank, top_neighbours

log = logging.getLogger("recommender.store")

ITEM_CF, POPULAR = "item-cf", "popular"
Answer = tuple[list[Scored], str]


class RecommenderStore(Store):
    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        neighbours: int = 50,
        history: int = 100,
    ) -> None:
        super().__init__(client, database, source="/recommender")
        self.neighbours = neighbours
        self.history = history
        self.orders = self.db["orders"]
        self.customers = self.db["customers"]
        self.items = self.db["items"]
        self.pairs = self.db["pairs"]

    async def setup(self) -> None:
        await super().setup()
        await self.items.create_index([("buyers", DESCENDING), ("_id", ASCENDING)])
        await self.pairs.create_index([("a", ASCENDING), ("b", ASCENDING)], unique=True)

    # -- learning (inside the handler's transaction) -------------------------------------
    async def order_created(
        self, tx: Tx, order_id: str, user_id: str, products: Sequence[str]
    ) -> bool:
        """Remember what an order holds; learn from it if its payment came first."""
        order = await self.orders.find_one_and_update(
            {"_id": order_id},
            {"$set": {"user_id": user_id, "products": list(products), "created": True}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=tx.session,
        )
        return await self._learn_if_paid(order, tx.session)

    async def order_paid(self, tx: Tx, order_id: str) -> bool:
        """Mark an order paid; learn from it if its items are known already."""
        order = await self.orders.find_one_and_update(
            {"_id": order_id},
            {"$set": {"paid": True}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=tx.session,
        )
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
        await self.items.bulk_write(
            [
                UpdateOne({"_id": item}, {"$inc": {"buyers": 1}}, upsert=True)
                for item in change.new_items
            ],
            session=session,
        )
        if change.pairs:
            await self.pairs.bulk_write(
                [
                    UpdateOne({"a": a, "b": b}, {"$inc": {"n": 1}}, upsert=True)
                    for a, b in change.pairs
                ],
                session=session,
            )
        together = await self._together(change.new_items, session)
        dirty = affected(change, together)
        together.update(await self._together(dirty - together.keys(), session))
        await self._refresh_neighbours(dirty, together, session)

    async def _together(
        self, items: Iterable[str], session: AsyncClientSession
    ) -> dict[str, dict[str, int]]:
        wanted = list(items)
        out: dict[str, dict[str, int]] = {item: {} for item in wanted}
        if wanted:
            async for pair in self.pairs.find({"a": {"$in": wanted}}, session=session):
                out[pair["a"]][pair["b"]] = pair["n"]
        return out

    async def _refresh_neighbours(
        self,
        items: set[str],
        together: dict[str, dict[str, int]],
        session: AsyncClientSession,
    ) -> None:
        involved = set(items).union(*(together[item] for item in items))
        buyers: dict[str, int] = defaultdict(int)
        async for doc in self.items.find(
            {"_id": {"$in": sorted(involved)}}, {"buyers": 1}, session=session
        ):
            buyers[doc["_id"]] = doc.get("buyers", 0)
        updates = [
            UpdateOne(
                {"_id": item},
                {
                    "$set": {
                        "neighbours": [
                            {"product_id": n.product_id, "score": n.score}
                            for n in top_neighbours(
                                buyers[item], together[item], buyers, self.neighbours
                            )
                        ]
                    }
                },
                upsert=True,
            )
            for item in sorted(items)
        ]
        if updates:
            await self.items.bulk_write(updates, session=session)

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
