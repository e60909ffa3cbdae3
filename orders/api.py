"""The orders HTTP API (contract §2): catalog, orders, recommendations."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from events.runtime import Runtime
from events.web import install_common, runtime_lifespan
from orders.auth import Authenticator, CurrentUser
from orders.bootstrap import wire
from orders.catalog import Product
from orders.config import Settings
from orders.handlers import (
    Context,
    IdempotencyConflict,
    PaymentMethod,
    Recommendations,
    place_order,
    recommend,
)
from orders.pricing import InvalidOrder
from orders.store import Order, PageKey

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or expired bearer token"}
}


async def get_ctx(request: Request) -> Context:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool
    ctx: Context = request.app.state.ctx
    return ctx


CtxDep = Annotated[Context, Depends(get_ctx)]


# -- request and response bodies ------------------------------------------------------------
class LineIn(BaseModel):
    # Unknown fields are refused rather than ignored: a client that sends a price believes
    # it sets one, and it does not (prices come from the catalog only).
    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(min_length=1, max_length=100)
    quantity: int = Field(strict=True, ge=1, le=100)


class OrderIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [{"product_id": "coffee-kenya-aa", "quantity": 2}],
                    "payment_method": "card_ok",
                }
            ]
        },
    )

    items: list[LineIn] = Field(min_length=1, max_length=50)
    payment_method: PaymentMethod = "card_ok"


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )


# -- cursors --------------------------------------------------------------------------------
def encode_cursor(key: PageKey) -> str:
    created_at, order_id = key
    raw = json.dumps([created_at.isoformat(), order_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, order_id = json.loads(raw)
        moment = datetime.fromisoformat(created_at)
        if not isinstance(order_id, str) or moment.tzinfo is None:
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error):
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "cursor"),
                    "msg": "not a cursor this API issued; use next_cursor from a previous page",
                    "type": "invalid_cursor",
                    "input": cursor,
                }
            ]
        ) from None
    return moment, order_id


# -- routes ---------------------------------------------------------------------------------
products = APIRouter(prefix="/products", tags=["catalog"])


@products.get("", response_model=list[Product])
async def list_products(
    ctx: CtxDep,
    category: Annotated[str | None, Query(max_length=50, description="Only this category")] = None,
) -> list[Product]:
    return await ctx.store.list_products(category=category)


@products.get(
    "/{product_id}", response_model=Product, responses={404: {"description": "No such product"}}
)
async def get_product(product_id: str, ctx: CtxDep) -> Product:
    product = await ctx.store.get_product(product_id)
    if product is None:
        raise HTTPException(404, detail=f"no product {product_id!r}; see GET /products")
    return product


orders = APIRouter(prefix="/orders", tags=["orders"])


@orders.post(
    "",
    status_code=201,
    response_model=Order,
    responses={
        **UNAUTHORIZED,
        200: {"model": Order, "description": "The order first placed with this Idempotency-Key"},
        409: {"description": "A request with this Idempotency-Key is still being processed"},
    },
)
async def create_order(
    body: OrderIn,
    user: CurrentUser,
    ctx: CtxDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[!-~]+$",
            description="Repeat a request safely: the same key returns the first order.",
        ),
    ] = None,
) -> Order:
    try:
        order, created = await place_order(
            ctx,
            user,
            body.items,
            payment_method=body.payment_method,
            idempotency_key=idempotency_key,
        )
    except InvalidOrder as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors]
        ) from None
    except IdempotencyConflict:
        raise HTTPException(
            409,
            detail="a request with this Idempotency-Key is still being processed; retry",
            headers={"Retry-After": "1"},
        ) from None
    response.headers["Location"] = f"/orders/{order.id}"
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return order


@orders.get("", response_model=OrderPage, responses=UNAUTHORIZED)
async def list_orders(
    user: CurrentUser,
    ctx: CtxDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=500, description="next_cursor of the previous page")
    ] = None,
) -> OrderPage:
    after = decode_cursor(cursor) if cursor is not None else None
    items, next_key = await ctx.store.page_orders(user.user_id, limit=limit, after=after)
    return OrderPage(
        items=items, next_cursor=encode_cursor(next_key) if next_key is not None else None
    )


@orders.get(
    "/{order_id}",
    response_model=Order,
    responses={**UNAUTHORIZED, 404: {"description": "No such order, or not yours"}},
)
async def get_order(order_id: str, user: CurrentUser, ctx: CtxDep) -> Order:
    order = await ctx.store.get_order(order_id, user_id=user.user_id)
    if order is None:
        # The same answer for "absent" and "someone else's": no existence leak.
        raise HTTPException(404, detail="order not found")
    return order


recommendations = APIRouter(prefix="/recommendations", tags=["recommendations"])


@recommendations.get("", response_model=Recommendations, responses=UNAUTHORIZED)
async def get_recommendations(
    user: CurrentUser,
    ctx: CtxDep,
    limit: Annotated[int, Query(ge=1, le=20)] = 3,
) -> Recommendations:
    return await recommend(ctx, user.user_id, limit)


# -- the app --------------------------------------------------------------------------------
def create_app(settings: Settings) -> FastAPI:
    async def bootstrap(runtime: Runtime) -> None:
        app.state.ctx = await wire(runtime)

    app = FastAPI(
        title="eventshop orders",
        version="1.0.0",
        description=(
            "Catalog, orders and recommendations. Orders need a bearer token from the users "
            "service; their status follows the payment results."
        ),
        lifespan=runtime_lifespan(settings, bootstrap),
    )
    app.state.authenticator = Authenticator(
        settings.jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        min_refresh=settings.jwks_refresh_seconds,
    )
    install_common(app, settings.service_name)
    app.include_router(products)
    app.include_router(orders)
    app.include_router(recommendations)
    return app
