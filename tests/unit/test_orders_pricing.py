"""Pricing rules, without I/O: catalog prices only, exact decimal totals, every bad line
named."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from orders.catalog import Product
from orders.pricing import InvalidOrder, price_order


@dataclass
class Line:
    product_id: str
    quantity: int


def product(pid: str, price: str, currency: str = "EUR") -> Product:
    return Product(
        id=pid, name=pid.title(), category="test", price=Decimal(price), currency=currency
    )


CATALOG = {
    p.id: p
    for p in (product("tea", "0.10"), product("cake", "0.20"), product("dollar", "1.00", "USD"))
}


def test_total_is_the_exact_sum_of_catalog_prices_times_quantities() -> None:
    priced = price_order([Line("tea", 3), Line("cake", 1)], CATALOG)

    # 0.1 * 3 + 0.2 is 0.5000000000000001 in binary floating point
    assert priced.total == Decimal("0.50")
    assert str(priced.total) == "0.50"
    assert priced.currency == "EUR"
    assert [
        (line.product_id, line.name, line.quantity, line.unit_price) for line in priced.lines
    ] == [
        ("tea", "Tea", 3, Decimal("0.10")),
        ("cake", "Cake", 1, Decimal("0.20")),
    ]


def test_unknown_products_are_each_named_by_line() -> None:
    with pytest.raises(InvalidOrder) as raised:
        price_order([Line("tea", 1), Line("coal", 1), Line("ice", 2)], CATALOG)

    assert [(e["loc"], e["type"]) for e in raised.value.errors] == [
        (("items", 1, "product_id"), "unknown_product"),
        (("items", 2, "product_id"), "unknown_product"),
    ]
    assert "GET /products" in raised.value.errors[0]["msg"]


def test_a_product_on_two_lines_is_rejected_at_the_second() -> None:
    with pytest.raises(InvalidOrder) as raised:
        price_order([Line("tea", 1), Line("cake", 1), Line("tea", 4)], CATALOG)

    [error] = raised.value.errors
    assert error["loc"] == ("items", 2, "product_id")
    assert error["type"] == "duplicate_product"
    assert "line 0" in error["msg"]


def test_one_order_is_one_currency() -> None:
    with pytest.raises(InvalidOrder) as raised:
        price_order([Line("tea", 1), Line("dollar", 1)], CATALOG)

    assert raised.value.errors[0]["type"] == "mixed_currencies"


def test_largest_order_fits_the_money_type() -> None:
    big = {f"p{i}": product(f"p{i}", "99999.99") for i in range(50)}

    priced = price_order([Line(f"p{i}", 100) for i in range(50)], big)

    assert priced.total == Decimal("499999950.00")
