"""Payment providers: the interface the handler charges through, and the simulated provider
that ships as the default, its behaviour picked by the order's ``payment_method``.

A real provider plugs in behind :class:`PaymentProvider` (wired in ``bootstrap.py``). The one
thing every provider must offer is an idempotency key: the handler passes the order id, so a
charge repeated after a crash returns the first result instead of charging twice.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from events.contracts import utcnow
from payments.store import from_money, to_money

CARD_OK = "card_ok"
CARD_DECLINED = "card_declined"
CARD_FLAKY = "card_flaky"
#: ``card_flaky`` fails this many times per order before it succeeds: with the default
#: retry delays (4 attempts) it always ends paid.
FLAKY_FAILURES = 2


@dataclass(frozen=True)
class ChargeRequest:
    #: The order id: the provider charges at most once per key.
    idempotency_key: str
    amount: Decimal
    currency: str
    method: str


@dataclass(frozen=True)
class Charge:
    transaction_id: str
    amount: Decimal
    currency: str


class PaymentDeclined(Exception):
    """Permanent: the provider refused the charge; asking again gives the same answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderUnavailable(Exception):
    """Transient: nothing was charged; the same request may succeed later."""


class PaymentProvider(Protocol):
    async def charge(self, request: ChargeRequest) -> Charge:
        """Charge ``request.amount`` once per ``request.idempotency_key``: a repeated request
        returns the first result (the same transaction, or the same decline). Raises
        :class:`PaymentDeclined` (permanent) or :class:`ProviderUnavailable` (transient)."""
        ...


def simulate(method: str, amount: Decimal, attempt: int) -> None:
    """The simulated provider's rules for the ``attempt``-th request (1-based) for one key:
    returns when the charge goes through, raises otherwise."""
    if amount <= 0:
        raise PaymentDeclined(f"invalid amount {amount}")
    if method == CARD_DECLINED:
        raise PaymentDeclined("card declined by issuer")
    if method == CARD_FLAKY and attempt <= FLAKY_FAILURES:
        raise ProviderUnavailable(
            f"provider timed out (simulated, attempt {attempt} of {FLAKY_FAILURES + 1})"
        )
    if method not in (CARD_OK, CARD_FLAKY):
        raise PaymentDeclined(f"unsupported payment method {method!r}")


class SimulatedProvider:
    """Stands in for a remote provider. Its books (requests and results per idempotency key)
    live in a collection, not in memory, so ``card_flaky`` counts attempts across restarts
    and replicas, and a repeated key replays the first result like a real provider does."""

    def __init__(self, ledger: AsyncCollection[dict[str, Any]], *, latency: float = 0.0) -> None:
        self.ledger = ledger
        self.latency = latency

    async def charge(self, request: ChargeRequest) -> Charge:
        if self.latency:
            await asyncio.sleep(self.latency)
        entry = await self._count_request(request)
        if "result" not in entry:
            try:
                simulate(request.method, request.amount, entry["requests"])
                result = {
                    "status": "charged",
                    "transaction_id": f"sim_{uuid.uuid4().hex}",
                    "amount": from_money(request.amount),
                    "currency": request.currency,
                }
            except PaymentDeclined as exc:
                result = {"status": "declined", "reason": exc.reason}
            # Only the first result per key counts; a concurrent request may have won.
            await self.ledger.update_one(
                {"_id": request.idempotency_key, "result": {"$exists": False}},
                {"$set": {"result": result, "decided_at": utcnow()}},
            )
            entry = await self.ledger.find_one({"_id": request.idempotency_key}) or entry
        return _replay(entry["result"], request)

    async def _count_request(self, request: ChargeRequest) -> dict[str, Any]:
        for _ in range(3):
            try:
                entry = await self.ledger.find_one_and_update(
                    {"_id": request.idempotency_key},
                    {"$inc": {"requests": 1}, "$setOnInsert": {"first_at": utcnow()}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                if entry is not None:
                    return entry
            except DuplicateKeyError:  # two first requests raced on the upsert; count again
                continue
        raise ProviderUnavailable("provider ledger contended; try again")


def _replay(result: dict[str, Any], request: ChargeRequest) -> Charge:
    if result["status"] == "declined":
        raise PaymentDeclined(str(result["reason"]))
    amount = to_money(result["amount"])
    if amount != request.amount or result["currency"] != request.currency:
        raise PaymentDeclined(
            f"idempotency key reused for a different amount ({amount} {result['currency']})"
        )
    return Charge(
        transaction_id=str(result["transaction_id"]), amount=amount, currency=request.currency
    )
