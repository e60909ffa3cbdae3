"""Item-to-item collaborative filtering, in memory: the functions the store and the
benchmark share."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.handlers import RecommendationRequest
from recommender.similarity import (
    ItemCF,
    Scored,
    cosine,
    learn,
    most_popular,
    rank,
    top_neighbours,
)


def test_first_purchase_pairs_every_new_item_with_every_other_in_both_directions() -> None:
    change = learn([], ["a", "b", "c"])
    assert change.new_items == ("a", "b", "c")
    assert sorted(change.pairs) == sorted(
        [(x, y) for x, y in combinations("abc", 2)] + [(y, x) for x, y in combinations("abc", 2)]
    )


def test_buying_an_owned_item_again_changes_nothing() -> None:
    change = learn(["a", "b"], ["b", "a", "a"])
    assert change.new_items == ()
    assert change.pairs == ()


def test_a_new_item_pairs_with_what_the_customer_owned_before() -> None:
    change = learn(["a"], ["a", "b"])
    assert change.new_items == ("b",)
    assert sorted(change.pairs) == [("a", "b"), ("b", "a")]


def test_cosine_of_binary_customer_vectors() -> None:
    assert cosine(1, 1, 2) == pytest.approx(1 / math.sqrt(2))
    assert cosine(3, 3, 3) == 1.0
    assert cosine(0, 5, 5) == 0.0
    assert cosine(1, 0, 5) == 0.0


def test_neighbours_are_the_k_most_similar_best_first_ties_by_id() -> None:
    together = {"b": 2, "c": 1, "d": 1, "e": 0}
    buyers = {"b": 2, "c": 1, "d": 1, "e": 9}
    best = top_neighbours(4, together, buyers, k=2)
    assert [n.product_id for n in best] == ["b", "c"]
    assert best[0].score == pytest.approx(2 / math.sqrt(8))


def test_rank_sums_similarity_over_owned_items_and_skips_them() -> None:
    lists = [
        [Scored(product_id="b", score=0.5), Scored(product_id="x", score=0.2)],
        [Scored(product_id="a", score=0.9), Scored(product_id="x", score=0.4)],
    ]
    ranked = rank(["a", "b"], lists, limit=5)
    assert [(s.product_id, round(s.score, 6)) for s in ranked] == [("x", 0.6)]


def test_most_popular_by_buyers_excluding_owned() -> None:
    buyers = {"a": 3, "b": 5, "c": 3, "d": 0}
    assert [s.product_id for s in most_popular(buyers, ["b"], 3)] == ["a", "c"]


def test_new_customer_gets_popular_and_a_buyer_gets_item_cf() -> None:
    model = ItemCF()
    model.add("alice", ["laptop", "mouse"])
    model.add("bob", ["laptop"])
    items, strategy = model.recommend("bob", 3)
    assert strategy == "item-cf"
    assert [s.product_id for s in items] == ["mouse"]
    items, strategy = model.recommend("carol", 3)
    assert strategy == "popular"
    assert [s.product_id for s in items] == ["laptop", "mouse"]


def brute_force_neighbours(owned: dict[str, set[str]], k: int) -> dict[str, list[Scored]]:
    """Cosine from scratch over the final customer sets: what incremental upkeep must equal."""
    buyers: dict[str, set[str]] = {}
    for customer, items in owned.items():
        for item in items:
            buyers.setdefault(item, set()).add(customer)
    out: dict[str, list[Scored]] = {}
    for a in buyers:
        scored = [
            Scored(
                product_id=b,
                score=len(buyers[a] & buyers[b]) / math.sqrt(len(buyers[a]) * len(buyers[b])),
            )
            for b in buyers
            if b != a and buyers[a] & buyers[b]
        ]
        out[a] = sorted(scored)[:k]
    return out


orders = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=4),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(orders, st.integers(min_value=1, max_value=6))
def test_incremental_neighbour_lists_equal_a_full_recomputation(
    history: list[tuple[str, list[str]]], k: int
) -> None:
    model = ItemCF(neighbours=k)
    owned: dict[str, set[str]] = {}
    for customer, basket in history:
        model.add(customer, basket)
        owned.setdefault(customer, set()).update(basket)
    expected = brute_force_neighbours(owned, k)
    for item, neighbours in expected.items():
        got = model.neighbours.get(item, [])
        assert [n.product_id for n in got] == [n.product_id for n in neighbours]
        assert [n.score for n in got] == pytest.approx([n.score for n in neighbours])
    # and learning the same history in one batch gives the very same model
    batch = ItemCF.fit(history, neighbours=k)
    assert batch.neighbours == {item: ns for item, ns in model.neighbours.items()}
    assert batch.buyers == model.buyers


def test_rpc_request_defaults_and_bounds() -> None:
    assert RecommendationRequest.model_validate({"user_id": "u1"}).limit == 3
    with pytest.raises(ValueError, match="limit"):
        RecommendationRequest.model_validate({"user_id": "u1", "limit": 0})
    with pytest.raises(ValueError, match="user_id"):
        RecommendationRequest.model_validate({"limit": 3})
