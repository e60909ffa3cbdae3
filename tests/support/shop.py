"""A small client for the public HTTP surface, as a user of eventshop would call it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.poll import eventually


@dataclass
class Customer:
    username: str
    email: str
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Shop:
    def __init__(self, users_url: str, orders_url: str) -> None:
        self.users_url = users_url
        self.orders_url = orders_url
        self.http = httpx.AsyncClient(timeout=15)

    async def close(self) -> None:
        await self.http.aclose()

    async def register(
        self, prefix: str = "user", password: str = "correct horse battery"
    ) -> Customer:
        username = f"{prefix}_{uuid.uuid4().hex[:8]}"
        email = f"{username}@example.com"
        r = await self.http.post(
            f"{self.users_url}/users",
            json={"username": username, "email": email, "password": password},
        )
        assert r.status_code == 201, r.text
        t = await self.http.post(
            f"{self.users_url}/auth/token", data={"username": username, "password": password}
        )
        assert t.status_code == 200, t.text
        return Customer(username, email, r.json()["id"], t.json()["access_token"])

    async def products(self) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.orders_url}/products")
        assert r.status_code == 200, r.text
        products: list[dict[str, Any]] = r.json()
        return products

    async def order(
        self,
        who: Customer,
        items: list[tuple[str, int]],
        payment_method: str = "card_ok",
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        r = await self.http.post(
            f"{self.orders_url}/orders",
            json={
                "items": [{"product_id": p, "quantity": q} for p, q in items],
                "payment_method": payment_method,
            },
            headers={**who.auth, **(headers or {})},
        )
        assert r.status_code == 201, r.text
        order: dict[str, Any] = r.json()
        return order

    async def get_order(self, who: Customer, order_id: str) -> httpx.Response:
        return await self.http.get(f"{self.orders_url}/orders/{order_id}", headers=who.auth)

    async def wait_status(
        self, who: Customer, order_id: str, status: str, timeout: float = 45
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            r = await self.get_order(who, order_id)
            return r.json() if r.status_code == 200 and r.json()["status"] == status else None

        result = await eventually(probe, timeout=timeout, interval=0.2, what=f"{order_id} {status}")
        assert result is not None
        return result
