"""What the recommender does for each event it consumes, and for each RPC request."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from events.bus import Handler
from events.contracts import CloudEvent, Event, OrderCreated, PaymentCompleted
from events.store import Tx
from recommender.store import RecommenderStore

log = logging.getLogger("recommender.handlers")


@dataclass(frozen=True)
class Context:
    store: RecommenderStore


async def on_order_created(event: OrderCreated, ctx: Context) -> None:
    products = [line.product_id for line in event.items]

    async def work(tx: Tx) -> None:
        await ctx.store.order_created(tx, event.order_id, event.user_id, products)

    await ctx.store.handle_once(work)


async def on_payment_completed(event: PaymentCompleted, ctx: Context) -> None:
    async def work(tx: Tx) -> None:
        await ctx.store.order_paid(tx, event.order_id)

    await ctx.store.handle_once(work)


SUBSCRIPTIONS: Mapping[type[Event] | type[CloudEvent], Handler] = {
    OrderCreated: on_order_created,
    PaymentCompleted: on_payment_completed,
}


class RecommendationRequest(BaseModel):
    """The RPC request on ``recommender.rpc`` (contract §3)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    user_id: str = Field(min_length=1, max_length=256)
    limit: int = Field(default=3, ge=1, le=100)


async def recommend(request: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """``{"user_id", "limit"}`` -> ``{"items": [{"product_id", "score"}], "strategy"}``.
    An invalid request raises; the RPC server answers it with ``{"error": ...}``."""
    req = RecommendationRequest.model_validate(request)
    items, strategy = await ctx.store.recommend(req.user_id, req.limit)
    log.debug("recommended %d item(s) by %s", len(items), strategy, extra={"user_id": req.user_id})
    return {
        "items": [{"product_id": s.product_id, "score": round(s.score, 6)} for s in items],
        "strategy": strategy,
    }
