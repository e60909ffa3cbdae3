"""What the orders service does: place an order (a command from the API), follow the
payment results (events), and recommend products (asks the recommender, falls back)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.errors import DuplicateKeyError

from events import logs
from events.auth import Principal
from events.bus import BadMessage, Handler
from events.contracts import (
    CloudEvent,
    Event,
    OrderCreated,
    OrderLine,
    PaymentCompleted,
    PaymentFailed,
    new_id,
)
from events.rpc import RpcClient
from events.store import Tx
from orders.pricing import RequestedLine, price_order
from orders.store import PENDING, Order, OrderItem, OrdersStore, OrderStatus, Settled, now_ms

log = logging.getLogger("orders.handlers")

RECOMMENDER_QUEUE = "recommender.rpc"
PaymentMethod = Literal["card_ok", "card_declined", "card_flaky"]


@dataclass
class Context:
    store: OrdersStore
    rpc: RpcClient
    recommender_timeout: float = 2.0


class OrderNotFound(LookupError):
    """A payment result for an order this service does not have (yet)."""


class IdempotencyConflict(Exception):
    """Another request with the same Idempotency-Key is being processed right now."""


# -- placing an order ----------------------------------------------------------------------
async def place_order(
    ctx: Context,
    user: Principal,
    lines: Sequence[RequestedLine],
    *,
    payment_method: PaymentMethod,
    idempotency_key: str | None,
) -> tuple[Order, bool]:
    """Price and store an order with its ``OrderCreated`` in one transaction. Returns the
    order and whether it was created now (False: the Idempotency-Key was seen before)."""
    if idempotency_key is not None:
        earlier = await ctx.store.find_by_idempotency_key(user.user_id, idempotency_key)
        if earlier is not None:
            return earlier, False

    priced = price_order(lines, await ctx.store.products_by_id(line.product_id for line in lines))
    now = now_ms()
    order = Order(
        id=new_id(),
        user_id=user.user_id,
        items=[
            OrderItem(
                product_id=line.product_id,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
            )
            for line in priced.lines
        ],
        total=priced.total,
        currency=priced.currency,
        status=PENDING,
        created_at=now,
        updated_at=now,
    )

    async def work(tx: Tx) -> Order:
        await ctx.store.insert_order(
            order,
            username=user.username,
            payment_method=payment_method,
            idempotency_key=idempotency_key,
            session=tx.session,
        )
        await tx.record(
            OrderCreated(
                order_id=order.id,
                user_id=order.user_id,
                username=user.username,
                items=tuple(
                    OrderLine(
                        product_id=item.product_id,
                        quantity=item.quantity,
                        unit_price=item.unit_price,
                    )
                    for item in order.items
                ),
                total=order.total,
                currency=order.currency,
                payment_method=payment_method,
            )
        )
        return order

    try:
        placed = await ctx.store.transaction(work)
    except DuplicateKeyError:
        # Two requests with one key raced; the unique index let exactly one commit.
        if idempotency_key is None:
            raise
        earlier = await ctx.store.find_by_idempotency_key(user.user_id, idempotency_key)
        if earlier is None:
            raise IdempotencyConflict(idempotency_key) from None
        return earlier, False
    with logs.bind(order_id=placed.id, user_id=placed.user_id):
        log.info(
            "order placed: %d line(s), total %s %s",
            len(placed.items),
            placed.total,
            placed.currency,
        )
    return placed, True


# -- payment results -----------------------------------------------------------------------
async def on_payment_completed(event: PaymentCompleted, ctx: Context) -> None:
    await _settle(
        ctx,
        event.order_id,
        event.user_id,
        "paid",
        {"payment_id": event.payment_id, "amount": str(event.amount), "currency": event.currency},
    )


async def on_payment_failed(event: PaymentFailed, ctx: Context) -> None:
    await _settle(
        ctx,
        event.order_id,
        event.user_id,
        "payment_failed",
        {
            "payment_id": event.payment_id,
            "amount": str(event.amount),
            "currency": event.currency,
            "reason": event.reason,
        },
    )


async def _settle(
    ctx: Context, order_id: str, user_id: str, status: OrderStatus, payment: dict[str, Any]
) -> None:
    async def work(tx: Tx) -> None:
        outcome, current = await ctx.store.settle(
            order_id, user_id=user_id, status=status, payment=payment, session=tx.session
        )
        if outcome is Settled.NOT_FOUND:
            # Results are caused by OrderCreated, which leaves only after the order is
            # committed: an unknown order is an anomaly. Raising retries it (a lagging
            # replica or a restore catches up) and then parks it in orders.dlq for a person.
            raise OrderNotFound(f"order {order_id} does not exist; cannot mark it {status}")
        if outcome is Settled.WRONG_USER:
            raise BadMessage(f"order {order_id} belongs to another user than the payment's")
        if outcome is Settled.UNCHANGED:
            log.info("order is %s already; a %s result changes nothing", current, status)
        else:
            log.info("order is now %s", status)

    await ctx.store.handle_once(work)


SUBSCRIPTIONS: dict[type[Event] | type[CloudEvent], Handler] = {
    PaymentCompleted: on_payment_completed,
    PaymentFailed: on_payment_failed,
}


# -- recommendations -----------------------------------------------------------------------
class Recommended(BaseModel):
    product_id: str
    name: str
    score: float


class Recommendations(BaseModel):
    user_id: str
    items: list[Recommended]
    strategy: str


class _ReplyItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    product_id: str
    score: float = Field(allow_inf_nan=False)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    items: list[_ReplyItem]
    strategy: str = "recommender"


async def recommend(ctx: Context, user_id: str, limit: int) -> Recommendations:
    """Ask the recommender; when it does not answer in time (or answers nonsense), fall
    back to what sells most here, topped up in catalog order."""
    try:
        raw = await ctx.rpc.call(
            RECOMMENDER_QUEUE,
            {"user_id": user_id, "limit": limit},
            timeout=ctx.recommender_timeout,
        )
        reply = _Reply.model_validate(raw)
    except TimeoutError:
        log.warning(
            "recommender did not answer within %.1fs; serving popular products",
            ctx.recommender_timeout,
        )
        return await _popular(ctx, user_id, limit)
    except ValidationError as exc:
        log.warning("recommender answered something unusable (%s); serving popular products", exc)
        return await _popular(ctx, user_id, limit)
    except Exception as exc:
        # A closed channel or a broker that is away: the page must still show something.
        log.warning("recommender call failed (%r); serving popular products", exc)
        return await _popular(ctx, user_id, limit)

    names = await ctx.store.products_by_id(item.product_id for item in reply.items)
    items = [
        Recommended(product_id=item.product_id, name=names[item.product_id].name, score=item.score)
        for item in reply.items
        if item.product_id in names  # a product no longer sold is not recommended
    ]
    if not items:
        # The recommender only knows what has been paid for; on a young shop (or for a
        # customer who bought all of that) its list is empty. Show the catalog's popular
        # products rather than nothing.
        bought = await ctx.store.products_bought(user_id)
        popular = await _popular(ctx, user_id, limit + len(bought))
        items = [item for item in popular.items if item.product_id not in bought]
        return Recommendations(user_id=user_id, items=items[:limit], strategy="popular")
    return Recommendations(user_id=user_id, items=items[:limit], strategy=reply.strategy)


async def _popular(ctx: Context, user_id: str, limit: int) -> Recommendations:
    ranked = await ctx.store.popular_products(limit)
    catalog = await ctx.store.list_products()
    by_id = {p.id: p for p in catalog}
    top = max((units for _, units in ranked), default=0) or 1
    items = [
        Recommended(product_id=pid, name=by_id[pid].name, score=round(units / top, 4))
        for pid, units in ranked
        if pid in by_id
    ]
    chosen = {item.product_id for item in items}
    items += [
        Recommended(product_id=p.id, name=p.name, score=0.0) for p in catalog if p.id not in chosen
    ][: max(0, limit - len(items))]
    return Recommendations(user_id=user_id, items=items[:limit], strategy="fallback")
