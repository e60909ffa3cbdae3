"""The product catalog: shipped as ``catalog.json`` next to this module and loaded into the
service's database at start. Prices are decimal strings in the file and ``Decimal`` here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events.contracts import Currency, Money

DEFAULT_PATH = Path(__file__).with_name("catalog.json")

ProductId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class Product(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: ProductId
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=50)
    price: Annotated[Money, Field(gt=0)]
    currency: Currency


class _ProductEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ProductId
    name: str
    category: str
    price: str
    currency: str | None = None


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: Currency
    products: list[_ProductEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> _CatalogFile:
        ids = [p.id for p in self.products]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate product ids: {', '.join(duplicates)}")
        return self


def load_catalog(path: Path | None = None) -> list[Product]:
    """The products of a catalog file, in file order; raises ``ValueError`` when the file
    breaks a rule (duplicate id, price that is not a positive decimal, bad currency)."""
    raw = json.loads((path or DEFAULT_PATH).read_text(encoding="utf-8"))
    parsed = _CatalogFile.model_validate(raw)
    return [
        Product(
            id=entry.id,
            name=entry.name,
            category=entry.category,
            # A string, so the price never passes through a float.
            price=entry.price,
            currency=entry.currency or parsed.currency,
        )
        for entry in parsed.products
    ]
