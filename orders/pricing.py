"""Pricing an order: prices come from the catalog only, totals are exact ``Decimal`` sums.

Pure functions, no I/O: the caller looks the products up and turns :class:`InvalidOrder`
into a 422 with one entry per offending field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from orders.catalog import Product

CENT = Decimal("0.01")


class RequestedLine(Protocol):
    @property
    def product_id(self) -> str: ...

    @property
    def quantity(self) -> int: ...


@dataclass(frozen=True)
class PricedLine:
    product_id: str
    name: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class PricedOrder:
    lines: tuple[PricedLine, ...]
    total: Decimal
    currency: str


class InvalidOrder(ValueError):
    """The order breaks a rule only the catalog can check. ``errors`` are shaped like
    pydantic's (``loc`` relative to the request body), so the API reports them as a 422."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(e["msg"]) for e in errors))
        self.errors = errors


def price_order(lines: Sequence[RequestedLine], catalog: Mapping[str, Product]) -> PricedOrder:
    """Price ``lines`` against ``catalog``; raises :class:`InvalidOrder` naming every line
    with an unknown product or a product already ordered on an earlier line."""
    errors: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for index, line in enumerate(lines):
        loc = ("items", index, "product_id")
        if line.product_id in first_line:
            errors.append(
                {
                    "loc": loc,
                    "msg": (
                        f"product {line.product_id!r} is already ordered on line "
                        f"{first_line[line.product_id]}; put the whole quantity on one line"
                    ),
                    "type": "duplicate_product",
                    "input": line.product_id,
                }
            )
            continue
        first_line[line.product_id] = index
        if line.product_id not in catalog:
            errors.append(
                {
                    "loc": loc,
                    "msg": f"unknown product {line.product_id!r}; see GET /products",
                    "type": "unknown_product",
                    "input": line.product_id,
                }
            )
    if errors:
        raise InvalidOrder(errors)

    products = [catalog[line.product_id] for line in lines]
    currencies = {p.currency for p in products}
    if len(currencies) > 1:
        raise InvalidOrder(
            [
                {
                    "loc": ("items",),
                    "msg": (
                        f"products in several currencies ({', '.join(sorted(currencies))}); "
                        "place one order per currency"
                    ),
                    "type": "mixed_currencies",
                    "input": None,
                }
            ]
        )
    priced = tuple(
        PricedLine(product_id=p.id, name=p.name, quantity=line.quantity, unit_price=p.price)
        for line, p in zip(lines, products, strict=True)
    )
    total = sum((line.unit_price * line.quantity for line in priced), Decimal(0))
    return PricedOrder(lines=priced, total=total.quantize(CENT), currency=currencies.pop())
