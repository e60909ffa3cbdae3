"""Item-to-item collaborative filtering (Linden, Smith and York, "Amazon.com
recommendations: item-to-item collaborative filtering", IEEE Internet Computing 2003).

Each item is a vector over customers (1 = the customer bought it at least once). Two items
are similar when the same customers bought both; the cosine of their vectors is

    sim(a, b) = buyers(a and b) / sqrt(buyers(a) * buyers(b))

The expensive part, the item-item table, is kept up to date one paid order at a time
(:func:`learn`), and each item's top neighbours are precomputed (:func:`top_neighbours`),
so answering "what should U see next" (:func:`rank`) reads only the neighbour lists of U's
own purchases: its cost depends on U and the catalog, never on the number of customers.

Everything here is pure and in memory. ``recommender.store`` applies the same functions to
its MongoDB collections, and ``bench.recommender_quality`` measures them offline through
:class:`ItemCF`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Scored:
    """An item with a score; sorts best first (highest score, then product id)."""

    sort_key: tuple[float, str] = field(init=False, repr=False, compare=True)
    product_id: str = field(compare=False)
    score: float = field(compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sort_key", (-self.score, self.product_id))


@dataclass(frozen=True)
class Learned:
    """What one purchase changes: items newly bought by this customer (their buyer count
    grows by one) and ordered item pairs whose co-purchase count grows by one."""

    new_items: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]


def learn(history: Iterable[str], bought: Iterable[str]) -> Learned:
    """The co-purchase updates for a customer who already owns ``history`` and now paid for
    ``bought``. Vectors are binary, so buying an item again changes nothing; every new item
    pairs with everything the customer owned before and with the other new items, in both
    directions (the table is symmetric)."""
    owned = list(dict.fromkeys(history))
    owned_set = set(owned)
    new = [item for item in dict.fromkeys(bought) if item not in owned_set]
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(new):
        for other in owned:
            pairs.append((item, other))
            pairs.append((other, item))
        for other in new[:i]:
            pairs.append((item, other))
            pairs.append((other, item))
    return Learned(tuple(new), tuple(pairs))


def cosine(together: int, buyers_a: int, buyers_b: int) -> float:
    """Cosine similarity of two binary customer vectors."""
    if together <= 0 or buyers_a <= 0 or buyers_b <= 0:
        return 0.0
    return together / math.sqrt(buyers_a * buyers_b)


def top_neighbours(
    buyers_of_item: int,
    together: Mapping[str, int],
    buyers: Mapping[str, int],
    k: int,
) -> list[Scored]:
    """An item's ``k`` most similar items, given how many customers bought it, how many
    bought it together with each other item, and each other item's buyer count."""
    scored = [
        Scored(product_id=other, score=cosine(count, buyers_of_item, buyers.get(other, 0)))
        for other, count in together.items()
    ]
    return sorted(s for s in scored if s.score > 0)[:k]


def rank(
    owned: Iterable[str],
    neighbour_lists: Iterable[Sequence[Scored]],
    limit: int,
) -> list[Scored]:
    """Items the customer does not own, by summed similarity to the items they own (each of
    ``neighbour_lists`` is the precomputed list of one owned item)."""
    exclude = set(owned)
    totals: dict[str, float] = defaultdict(float)
    for neighbours in neighbour_lists:
        for n in neighbours:
            if n.product_id not in exclude:
                totals[n.product_id] += n.score
    return sorted(Scored(product_id=item, score=score) for item, score in totals.items())[:limit]


def most_popular(buyers: Mapping[str, int], exclude: Iterable[str], limit: int) -> list[Scored]:
    """The items most customers bought, scored by their buyer count."""
    skip = set(exclude)
    ranked = sorted(
        Scored(product_id=item, score=float(count))
        for item, count in buyers.items()
        if item not in skip and count > 0
    )
    return ranked[:limit]


class ItemCF:
    """The whole model in memory: used by the benchmark and by unit tests as the reference
    the MongoDB-backed store must agree with."""

    def __init__(self, *, neighbours: int = 50) -> None:
        self.k = neighbours
        self.owned: dict[str, list[str]] = defaultdict(list)
        self.buyers: dict[str, int] = defaultdict(int)
        self.together: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.neighbours: dict[str, list[Scored]] = {}

    @classmethod
    def fit(cls, orders: Iterable[tuple[str, Iterable[str]]], *, neighbours: int = 50) -> ItemCF:
        """Learn a whole history of paid ``(customer, items)`` orders, then compute every
        neighbour list once: the same model :meth:`add` keeps up one order at a time."""
        model = cls(neighbours=neighbours)
        for customer, bought in orders:
            model._count(customer, bought)
        for item in model.buyers:
            model._refresh(item)
        return model

    def add(self, customer: str, bought: Iterable[str]) -> None:
        """One paid order; refreshes the neighbour lists it affects, as the store does."""
        change = self._count(customer, bought)
        for item in affected(change, self.together):
            self._refresh(item)

    def _count(self, customer: str, bought: Iterable[str]) -> Learned:
        change = learn(self.owned[customer], bought)
        self.owned[customer].extend(change.new_items)
        for item in change.new_items:
            self.buyers[item] += 1
        for a, b in change.pairs:
            self.together[a][b] += 1
        return change

    def _refresh(self, item: str) -> None:
        self.neighbours[item] = top_neighbours(
            self.buyers[item], self.together[item], self.buyers, self.k
        )

    def recommend(self, customer: str, limit: int) -> tuple[list[Scored], str]:
        owned = self.owned.get(customer, [])
        if owned:
            found = rank(owned, (self.neighbours.get(item, []) for item in owned), limit)
            if found:
                return found, "item-cf"
        return self.popular(owned, limit), "popular"

    def popular(self, exclude: Iterable[str], limit: int) -> list[Scored]:
        return most_popular(self.buyers, exclude, limit)


def affected(change: Learned, together: Mapping[str, Mapping[str, int]]) -> set[str]:
    """Items whose neighbour lists a purchase changes: the items of every changed pair, and
    every partner of a newly bought item (its buyer count, a cosine denominator, moved).
    ``together`` is the table after the change."""
    items = {a for a, _ in change.pairs} | set(change.new_items)
    for item in change.new_items:
        items.update(together.get(item, {}))
    return items
