"""What payments does with each event it consumes. Transport-free: the bus acks, retries and
parks; these functions charge and record.

Why a charge never happens twice:

* a delivery first looks for the order's payment and does nothing when there is one
  (a redelivery after the commit, a duplicated event);
* the provider is called with the order id as its idempotency key, so a delivery that was
  charged but died before the commit gets the same transaction back on redelivery;
* the payment, the successful attempt and the event are committed in one transaction under
  a unique index on ``order_id``: of two deliveries racing past the first check, one commits
  and the other's transaction (its event included) is rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pymongo.errors import DuplicateKeyError

from events.bus import Handler, current_delivery
from events.contracts import CloudEvent, Event, OrderCreated, PaymentCompleted, PaymentFailed
from events.store import Tx
from payments.provider import Charge, ChargeRequest, PaymentDeclined, PaymentProvider
from payments.store import Attempt, Outcome, Payment, PaymentsStore

log = logging.getLogger("payments")


@dataclass(frozen=True)
class Context:
    store: PaymentsStore
    provider: PaymentProvider


async def on_order_created(event: OrderCreated, ctx: Context) -> None:
    if await ctx.store.payment_for(event.order_id) is not None:
        log.info("order already has a payment; not charging again")
        return
    request = ChargeRequest(
        idempotency_key=event.order_id,
        amount=event.total,
        currency=event.currency,
        method=event.payment_method,
    )
    try:
        charge = await ctx.provider.charge(request)
    except PaymentDeclined as exc:
        await _settle(ctx, event, _failed(event, exc.reason), _attempt(event, "declined", exc))
    except Exception as exc:
        # Transient (or unknown): nothing was charged. Keep the attempt, let the bus retry.
        await ctx.store.add_attempt(_attempt(event, "error", exc))
        raise
    else:
        await _settle(ctx, event, _completed(event, charge), _attempt(event, "succeeded", charge))


async def _settle(ctx: Context, event: OrderCreated, payment: Payment, attempt: Attempt) -> None:
    async def work(tx: Tx) -> None:
        await ctx.store.add_payment(payment, session=tx.session)
        await ctx.store.add_attempt(attempt, session=tx.session)
        await tx.record(_outcome_event(payment))

    try:
        await ctx.store.transaction(work)
    except DuplicateKeyError:
        if await ctx.store.payment_for(event.order_id) is None:
            raise
        log.info("a concurrent delivery settled this order first; nothing to do")
        return
    if payment.status == "completed":
        log.info(
            "payment completed",
            extra={"payment_id": payment.payment_id, "transaction_id": payment.transaction_id},
        )
    else:
        log.warning("payment failed: %s", payment.reason, extra={"payment_id": payment.payment_id})


def _completed(event: OrderCreated, charge: Charge) -> Payment:
    return Payment(
        order_id=event.order_id,
        user_id=event.user_id,
        amount=charge.amount,
        currency=charge.currency,
        method=event.payment_method,
        status="completed",
        transaction_id=charge.transaction_id,
    )


def _failed(event: OrderCreated, reason: str) -> Payment:
    return Payment(
        order_id=event.order_id,
        user_id=event.user_id,
        amount=event.total,
        currency=event.currency,
        method=event.payment_method,
        status="failed",
        reason=reason,
    )


def _outcome_event(payment: Payment) -> Event:
    common = {
        "payment_id": payment.payment_id,
        "order_id": payment.order_id,
        "user_id": payment.user_id,
        "amount": payment.amount,
        "currency": payment.currency,
    }
    if payment.status == "completed":
        return PaymentCompleted(**common)
    return PaymentFailed(**common, reason=payment.reason or "declined")


def _attempt(event: OrderCreated, outcome: Outcome, detail: Charge | BaseException) -> Attempt:
    delivery = current_delivery()
    return Attempt(
        order_id=event.order_id,
        event_id=delivery.event_id if delivery else "",
        delivery_attempt=delivery.attempt if delivery else 0,
        outcome=outcome,
        error=None if isinstance(detail, Charge) else f"{type(detail).__name__}: {detail}",
        transaction_id=detail.transaction_id if isinstance(detail, Charge) else None,
    )


SUBSCRIPTIONS: Mapping[type[Event] | type[CloudEvent], Handler] = {
    OrderCreated: on_order_created,
}
