"""The payments database: one payment per order (a unique index on ``order_id``), every
attempt to charge it, and the outbox its events leave through."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from bson.decimal128 import Decimal128
from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession

from events.contracts import utcnow
from events.store import Store

Outcome = Literal["succeeded", "declined", "error"]


def from_money(amount: Decimal) -> Decimal128:
    """Money is stored as BSON decimal, never as a float."""
    return Decimal128(amount)


def to_money(value: Any) -> Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))


@dataclass(frozen=True)
class Payment:
    """The final transaction of an order: completed (charged) or failed (declined)."""

    order_id: str
    user_id: str
    amount: Decimal
    currency: str
    method: str
    status: Literal["completed", "failed"]
    transaction_id: str | None = None
    reason: str | None = None
    payment_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Attempt:
    """One call to the provider and how it went."""

    order_id: str
    event_id: str
    delivery_attempt: int
    outcome: Outcome
    error: str | None = None
    transaction_id: str | None = None
    at: datetime = field(default_factory=utcnow)


class PaymentsStore(Store):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.payments = self.db["payments"]
        self.attempts = self.db["payment_attempts"]

    async def setup(self) -> None:
        await super().setup()
        # The "one charge per order, ever" rule, enforced by the database itself.
        await self.payments.create_index("order_id", unique=True)
        await self.attempts.create_index([("order_id", ASCENDING), ("at", ASCENDING)])

    async def payment_for(self, order_id: str) -> Payment | None:
        doc = await self.payments.find_one({"order_id": order_id})
        if doc is None:
            return None
        doc["payment_id"] = doc.pop("_id")
        doc["amount"] = to_money(doc["amount"])
        return Payment(**doc)

    async def add_payment(self, payment: Payment, *, session: AsyncClientSession) -> None:
        """Insert ``payment``; raises ``DuplicateKeyError`` when the order has one already."""
        doc = asdict(payment)
        doc["_id"] = doc.pop("payment_id")
        doc["amount"] = from_money(payment.amount)
        await self.payments.insert_one(doc, session=session)

    async def add_attempt(
        self, attempt: Attempt, *, session: AsyncClientSession | None = None
    ) -> None:
        await self.attempts.insert_one(
            {"_id": str(uuid.uuid4()), **asdict(attempt)}, session=session
        )

    async def attempts_for(self, order_id: str) -> list[Attempt]:
        cursor = self.attempts.find({"order_id": order_id}, {"_id": 0}).sort("at", ASCENDING)
        return [Attempt(**doc) async for doc in cursor]
