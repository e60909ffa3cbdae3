"""The recommender's MongoDB store keeps exactly the model the in-memory reference computes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from events.store import Tx
from recommender.similarity import ItemCF
from recommender.store import RecommenderStore


@pytest.fixture
async def store(mongo: Any, db_prefix: str) -> RecommenderStore:
    s = RecommenderStore(mongo, f"{db_prefix}recommender", neighbours=4)
    await s.setup()
    return s


async def test_neighbour_lists_in_the_database_equal_the_reference_model(
    store: RecommenderStore,
) -> None:
    # given sixty paid orders of eight customers over ten products, payments first for some
    rng = random.Random(7)
    reference = ItemCF(neighbours=4)
    for n in range(60):
        order_id, customer = f"o{n}", f"u{rng.randrange(8)}"
        basket = rng.sample("abcdefghij", rng.randint(1, 3))
        steps = [
            lambda tx, o=order_id, c=customer, b=basket: store.order_created(tx, o, c, b),
            lambda tx, o=order_id: store.order_paid(tx, o),
        ]
        if rng.random() < 0.3:
            steps.reverse()
        for step in steps:
            await store.transaction(step)
        reference.add(customer, basket)

    # then every item's stored neighbour list is the reference's, scores included
    stored: dict[str, Any] = {doc["_id"]: doc async for doc in store.items.find({})}
    assert set(stored) == set(reference.buyers)
    for item, doc in stored.items():
        assert doc["buyers"] == reference.buyers[item]
        expected = [(s.product_id, s.score) for s in reference.neighbours[item]]
        got = [(n["product_id"], n["score"]) for n in doc["neighbours"]]
        assert [p for p, _ in got] == [p for p, _ in expected], item
        assert [s for _, s in got] == pytest.approx([s for _, s in expected])

    # and answers agree for every customer
    for customer in [f"u{i}" for i in range(8)] + ["newcomer"]:
        items, strategy = await store.recommend(customer, 5)
        ref_items, ref_strategy = reference.recommend(customer, 5)
        assert strategy == ref_strategy
        assert [s.product_id for s in items] == [s.product_id for s in ref_items]


async def test_an_order_is_learned_once_even_if_paid_twice(store: RecommenderStore) -> None:
    async def created(tx: Tx) -> None:
        await store.order_created(tx, "o1", "u1", ["a", "b"])

    async def paid(tx: Tx) -> None:
        await store.order_paid(tx, "o1")

    for step in (created, paid, paid, created):
        await store.transaction(step)
    doc = await store.items.find_one({"_id": "a"})
    assert doc is not None
    assert doc["buyers"] == 1
    assert doc["together"] == [{"id": "b", "n": 1}]
