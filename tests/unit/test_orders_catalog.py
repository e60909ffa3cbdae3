"""The shipped catalog file and the rules every catalog file must follow."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from orders.catalog import DEFAULT_PATH, load_catalog


def test_shipped_catalog_has_about_fifty_products_in_several_categories() -> None:
    products = load_catalog()

    assert 40 <= len(products) <= 60
    assert len({p.category for p in products}) >= 4
    assert len({p.id for p in products}) == len(products)
    assert {p.currency for p in products} == {"EUR"}
    assert all(p.price > 0 and p.price == p.price.quantize(Decimal("0.01")) for p in products)


def test_prices_are_decimal_strings_in_the_file() -> None:
    raw = json.loads(DEFAULT_PATH.read_text())

    assert all(isinstance(p["price"], str) for p in raw["products"])


def write(tmp_path: Path, products: list[dict[str, str]], currency: str = "EUR") -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"currency": currency, "products": products}))
    return path


@pytest.mark.parametrize(
    "products",
    [
        [{"id": "a", "name": "A", "category": "c", "price": "1.00"}] * 2,
        [{"id": "a", "name": "A", "category": "c", "price": "-1.00"}],
        [{"id": "a", "name": "A", "category": "c", "price": "0"}],
        [{"id": "a", "name": "A", "category": "c", "price": "1.001"}],
        [{"id": "a", "name": "A", "category": "c", "price": "NaN"}],
        [{"id": "Not An Id", "name": "A", "category": "c", "price": "1.00"}],
        [],
    ],
    ids=["duplicate id", "negative", "zero", "sub-cent", "nan", "bad id", "empty"],
)
def test_a_catalog_file_breaking_a_rule_is_refused(
    tmp_path: Path, products: list[dict[str, str]]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError is a ValueError
        load_catalog(write(tmp_path, products))


def test_a_product_may_name_its_own_currency(tmp_path: Path) -> None:
    [p] = load_catalog(
        write(
            tmp_path,
            [{"id": "a", "name": "A", "category": "c", "price": "2.50", "currency": "USD"}],
        )
    )

    assert (p.price, p.currency) == (Decimal("2.50"), "USD")
