"""The baseline for ``bench.http``: a bare FastAPI app with the orders service's own request
and response models, served by the same ``run_http`` (same uvicorn settings, one worker),
but with no authentication, no middleware, no database and no events.

``BARE_PORT=8099 python -m bench.bare_app``
"""

from __future__ import annotations

from decimal import Decimal

from fastapi import FastAPI, Response
from pydantic import Field

from events.contracts import new_id
from events.settings import ServiceSettings
from events.web import run_http
from orders.api import OrderIn
from orders.store import Order, OrderItem, now_ms

PRICE = Decimal("4.20")


class Settings(ServiceSettings):
    service_name: str = Field(default="bare", exclude=True)
    bare_port: int = 8099


#: What GET answers: an order the size of the one bench.http posts (two lines).
TWO_LINES = [("bare-product-1", 1), ("bare-product-2", 2)]


def fake_order(order_id: str, lines: list[tuple[str, int]]) -> Order:
    items = [
        OrderItem(product_id=product_id, name="Bare", quantity=quantity, unit_price=PRICE)
        for product_id, quantity in lines
    ]
    now = now_ms()
    return Order(
        id=order_id,
        user_id="bare-user",
        items=items,
        total=sum((PRICE * item.quantity for item in items), Decimal("0.00")),
        currency="EUR",
        status="pending",
        created_at=now,
        updated_at=now,
    )


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="bare")

    @app.post("/orders", status_code=201, response_model=Order)
    async def create_order(body: OrderIn, response: Response) -> Order:
        order = fake_order(new_id(), [(line.product_id, line.quantity) for line in body.items])
        response.headers["Location"] = f"/orders/{order.id}"
        return order

    @app.get("/orders/{order_id}", response_model=Order)
    async def get_order(order_id: str) -> Order:
        return fake_order(order_id, TWO_LINES)

    return app


if __name__ == "__main__":
    run_http(
        Settings,
        create_app,
        port=lambda settings: settings.bare_port,
        description="A bare FastAPI app: the baseline of bench.http.",
    )
