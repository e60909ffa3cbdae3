"""Recommendation quality: item-to-item CF against most-popular, offline, on a seeded
synthetic shop whose customers have latent tastes.

    uv run python -m bench.recommender_quality                  # the recorded run
    uv run python -m bench.recommender_quality --seed 7 --users 1000

The shop: ``--categories`` categories of ``--items`` products each. Within a category,
product appeal follows a Zipf law (a few best sellers, a long tail); categories differ in
overall appeal too, so "most popular" is a fair baseline, not a strawman. Customers belong
to one of ``--categories`` segments; a segment prefers two categories (its own and the
next). Each customer places 2-6 paid orders of 1-3 distinct products: with probability
``--taste`` a product comes from the preferred categories (2:1), otherwise from the whole
catalog by appeal. Nothing of this structure is told to the recommender.

Evaluation, leave-last-purchase-out: each customer's last purchased product is hidden, the
model learns every other purchase, then each strategy names 10 products the customer does
not own yet. hit-rate@10 = share of customers whose hidden product is among the 10;
precision@10 = hidden products found / products recommended (one relevant item each, so at
most 0.1). Item-CF answers through ``recommender.similarity`` (the functions the service's
store runs), falling back to popularity exactly as the service does.

Never run as a test; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from recommender.similarity import ItemCF, Scored

K = 10


@dataclass(frozen=True)
class Shop:
    catalog: list[str]
    appeal: dict[str, float]
    by_category: list[list[str]]


@dataclass(frozen=True)
class Customer:
    id: str
    orders: list[list[str]]
    #: the true purchase probability of each product for this customer (the oracle's view)
    chance: dict[str, float]


def make_shop(rng: random.Random, categories: int, items: int) -> Shop:
    by_category = [[f"c{c:02d}-p{i:03d}" for i in range(items)] for c in range(categories)]
    category_appeal = [1.0 / (c + 1) ** 0.5 for c in range(categories)]
    rng.shuffle(category_appeal)
    appeal = {
        product: category_appeal[c] / (rank + 1) ** 0.9
        for c, products in enumerate(by_category)
        for rank, product in enumerate(products)
    }
    return Shop([p for ps in by_category for p in ps], appeal, by_category)


def make_customers(rng: random.Random, shop: Shop, count: int, taste: float) -> list[Customer]:
    categories = len(shop.by_category)
    everything = shop.catalog
    appeal = list(accumulate(shop.appeal[p] for p in everything))
    segments = []
    for segment in range(categories):
        own, next_ = shop.by_category[segment], shop.by_category[(segment + 1) % categories]
        liked = own + next_
        weights = [shop.appeal[p] * (2 if p in own else 1) for p in liked]
        chance = {p: (1 - taste) * shop.appeal[p] / appeal[-1] for p in everything}
        for product, weight in zip(liked, weights, strict=True):
            chance[product] += taste * weight / sum(weights)
        segments.append((liked, list(accumulate(weights)), chance))
    customers = []
    for n in range(count):
        liked, liked_cum, chance = segments[rng.randrange(categories)]
        owned: set[str] = set()
        orders = []
        for _ in range(rng.randint(2, 6)):
            basket: list[str] = []
            for _ in range(rng.randint(1, 3)):
                if rng.random() < taste:
                    product = rng.choices(liked, cum_weights=liked_cum)[0]
                else:
                    product = rng.choices(everything, cum_weights=appeal)[0]
                if product not in owned:  # vectors are binary: a repeat teaches nothing
                    owned.add(product)
                    basket.append(product)
            if basket:
                orders.append(basket)
        if len(owned) >= 2:  # one purchase to learn from, one to hide
            customers.append(Customer(f"u{n:05d}", orders, chance))
    return customers


def split(customer: Customer) -> tuple[list[list[str]], str]:
    """Hide the customer's last purchase; everything before it is training data."""
    *earlier, last = customer.orders
    return [*earlier, last[:-1]] if last[:-1] else earlier, last[-1]


@dataclass
class Score:
    hits: int = 0
    shown: int = 0
    customers: int = 0

    def add(self, recommended: Sequence[Scored], hidden: str) -> None:
        self.customers += 1
        self.shown += len(recommended)
        self.hits += any(s.product_id == hidden for s in recommended)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.customers if self.customers else 0.0

    @property
    def precision(self) -> float:
        return self.hits / self.shown if self.shown else 0.0


def best_guess(customer: Customer, owned: Sequence[str]) -> list[Scored]:
    """The ceiling: the products this customer is truly most likely to buy next."""
    skip = set(owned)
    return sorted(
        Scored(product_id=p, score=c) for p, c in customer.chance.items() if p not in skip
    )[:K]


@dataclass
class Result:
    customers: int
    orders: int
    purchases: int
    cf: Score
    popular: Score
    oracle: Score
    fell_back: int
    fit_seconds: float
    answer_seconds: list[float]

    @property
    def ratio(self) -> float:
        return self.cf.hit_rate / self.popular.hit_rate if self.popular.hit_rate else math.inf


def evaluate(args: argparse.Namespace, taste: float) -> Result:
    rng = random.Random(args.seed)
    shop = make_shop(rng, args.categories, args.items)
    customers = make_customers(rng, shop, args.users, taste)
    held_out: dict[str, str] = {}
    training: list[tuple[str, list[str]]] = []
    for customer in customers:
        orders, hidden = split(customer)
        held_out[customer.id] = hidden
        training.extend((customer.id, basket) for basket in orders)
    rng.shuffle(training)  # orders of different customers interleave, as in the shop

    started = time.perf_counter()
    model = ItemCF.fit(training, neighbours=args.neighbours)
    fit_seconds = time.perf_counter() - started

    result = Result(
        customers=len(customers),
        orders=len(training),
        purchases=sum(len(basket) for _, basket in training),
        cf=Score(),
        popular=Score(),
        oracle=Score(),
        fell_back=0,
        fit_seconds=fit_seconds,
        answer_seconds=[],
    )
    for customer in customers:
        hidden = held_out[customer.id]
        t0 = time.perf_counter()
        recommended, strategy = model.recommend(customer.id, K)
        result.answer_seconds.append(time.perf_counter() - t0)
        result.fell_back += strategy == "popular"
        result.cf.add(recommended, hidden)
        owned = model.owned.get(customer.id, [])
        result.popular.add(model.popular(owned, K), hidden)
        result.oracle.add(best_guess(customer, owned), hidden)
    return result


def report(args: argparse.Namespace, result: Result) -> None:
    print(
        f"synthetic shop: seed {args.seed}, {args.categories * args.items} products in "
        f"{args.categories} categories, {result.customers} customers, {result.purchases} "
        f"training purchases in {result.orders} orders, taste {args.taste:.2f}"
    )
    print(f"leave-last-purchase-out, top {K}, neighbours kept per item {args.neighbours}")
    print()
    print(f"{'strategy':<10} {'hit-rate@10':>12} {'precision@10':>13}")
    for name, score in (("item-cf", result.cf), ("popular", result.popular)):
        print(f"{name:<10} {score.hit_rate:>12.4f} {score.precision:>13.4f}")
    oracle = result.oracle
    print(f"{'oracle':<10} {oracle.hit_rate:>12.4f} {oracle.precision:>13.4f}  (knows the tastes)")
    print()
    print(f"item-cf / popular (hit-rate@10): {result.ratio:.2f}x  (goal >= 2x)")
    print(
        f"item-cf / oracle: {result.cf.hit_rate / oracle.hit_rate:.2f}; "
        f"oracle / popular: {oracle.hit_rate / result.popular.hit_rate:.2f}x (the ceiling)"
    )
    print(f"item-cf fell back to popular for {result.fell_back} of {result.customers} customers")
    times = result.answer_seconds
    print(
        f"fit {result.fit_seconds:.2f}s; answer p50 {statistics.median(times) * 1e6:.0f} us, "
        f"p99 {sorted(times)[int(len(times) * 0.99)] * 1e6:.0f} us (in memory)"
    )


def sweep(args: argparse.Namespace) -> None:
    print()
    print("taste    item-cf  popular   oracle  cf/popular  cf/oracle")
    for taste in (0.6, 0.7, 0.8, 0.9, 0.95):
        r = evaluate(args, taste)
        of_ceiling = r.cf.hit_rate / r.oracle.hit_rate
        print(
            f"{taste:<6.2f} {r.cf.hit_rate:>8.4f} {r.popular.hit_rate:>8.4f} "
            f"{r.oracle.hit_rate:>8.4f} {r.ratio:>10.2f}x {of_ceiling:>10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recommender_quality",
        description="Offline quality of item-to-item CF vs most-popular (see module docstring).",
    )
    parser.add_argument("--seed", type=int, default=2003)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--categories", type=int, default=8)
    parser.add_argument("--items", type=int, default=30, help="products per category")
    parser.add_argument("--taste", type=float, default=0.8, help="share of purchases by taste")
    parser.add_argument("--neighbours", type=int, default=50)
    parser.add_argument(
        "--sweep", action="store_true", help="also run tastes 0.6 .. 0.95 (about 5x longer)"
    )
    args = parser.parse_args()
    report(args, evaluate(args, args.taste))
    if args.sweep:
        sweep(args)


if __name__ == "__main__":
    main()
