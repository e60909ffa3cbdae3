"""GET /recommendations asks the recommender over RabbitMQ RPC and never hangs: without
an answer in time it serves popular products with ``strategy: "fallback"``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from events.bus import Broker
from events.rpc import RpcServer
from tests.integration.test_orders_support import (  # noqa: F401 - pytest fixtures, used by name
    Issuer,
    JwksServer,
    alice_token,
    bearer,
    orders_api,
    orders_client,
    orders_issuer,
    orders_users,
    placed,
)

QUEUE = "recommender.rpc"


@pytest.fixture
async def impatient(make_settings: Any, users: JwksServer) -> AsyncIterator[httpx.AsyncClient]:
    async with orders_api(make_settings, users.url, recommender_timeout=0.5) as c:
        yield c


async def responder(broker: Broker, answer: Any) -> RpcServer:
    server = RpcServer(broker, QUEUE, answer)
    await server.start()
    return server


async def test_recommender_answer_is_enriched_with_product_names(
    client: httpx.AsyncClient, broker: Broker, alice: str
) -> None:
    asked: list[dict[str, Any]] = []

    async def recommender(request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request)
        return {
            "items": [
                {"product_id": "book-ddia", "score": 0.93},
                {"product_id": "withdrawn-product", "score": 0.9},
                {"product_id": "brew-hand-grinder", "score": 0.41},
            ],
            "strategy": "co-purchase",
        }

    server = await responder(broker, recommender)
    try:
        response = await client.get("/recommendations", params={"limit": 5}, headers=bearer(alice))
    finally:
        await server.stop()

    assert response.status_code == 200
    assert asked == [{"user_id": "user-alice", "limit": 5}]
    assert response.json() == {
        "user_id": "user-alice",
        "items": [
            {
                "product_id": "book-ddia",
                "name": "Designing Data-Intensive Applications",
                "score": 0.93,
            },
            {
                "product_id": "brew-hand-grinder",
                "name": "Hand grinder with conical burrs",
                "score": 0.41,
            },
        ],
        "strategy": "co-purchase",
    }


async def test_without_a_recommender_popular_products_are_served_as_fallback(
    client: httpx.AsyncClient, alice: str, issuer: Issuer
) -> None:
    # given some products sell more than others
    bob = issuer.token("user-bob", "bob")
    await placed(client, bob, [("outdoor-headlamp", 5), ("book-sre", 1)])
    await placed(client, alice, [("outdoor-headlamp", 1), ("kitchen-mugs-set", 3)])

    # when nobody answers on recommender.rpc
    response = await client.get("/recommendations", params={"limit": 4}, headers=bearer(alice))

    # then the answer is the best sellers, topped up from the catalog
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "user-alice"
    assert body["strategy"] == "fallback"
    assert [item["product_id"] for item in body["items"][:3]] == [
        "outdoor-headlamp",
        "kitchen-mugs-set",
        "book-sre",
    ]
    assert len(body["items"]) == 4
    assert all(item["name"] and isinstance(item["score"], float) for item in body["items"])


async def test_default_limit_is_three(client: httpx.AsyncClient, alice: str) -> None:
    response = await client.get("/recommendations", headers=bearer(alice))

    assert response.status_code == 200
    assert response.json()["strategy"] == "fallback"
    assert len(response.json()["items"]) == 3


async def test_a_recommender_too_slow_to_answer_gets_the_fallback(
    impatient: httpx.AsyncClient, broker: Broker, alice: str
) -> None:
    release = asyncio.Event()

    async def stuck(request: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"items": [], "strategy": "too-late"}

    server = await responder(broker, stuck)
    try:
        response = await impatient.get("/recommendations", headers=bearer(alice))
    finally:
        release.set()
        await server.stop()

    assert response.status_code == 200
    assert response.json()["strategy"] == "fallback"


async def test_a_recommender_error_or_nonsense_gets_the_fallback(
    client: httpx.AsyncClient, broker: Broker, alice: str
) -> None:
    answers: list[Any] = [
        {"error": "ZeroDivisionError: division by zero"},
        {"items": "many"},
        {"items": [{"product_id": "book-ddia", "score": "high"}]},
    ]

    async def broken(request: dict[str, Any]) -> Any:
        return answers.pop(0)

    server = await responder(broker, broken)
    try:
        for _ in range(3):
            response = await client.get("/recommendations", headers=bearer(alice))
            assert response.status_code == 200
            assert response.json()["strategy"] == "fallback"
    finally:
        await server.stop()


async def test_limit_outside_1_to_20_is_422(client: httpx.AsyncClient, alice: str) -> None:
    for limit in (0, 21, "few"):
        response = await client.get(
            "/recommendations", params={"limit": limit}, headers=bearer(alice)
        )

        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_an_empty_recommender_answer_is_filled_with_popular_products_not_yet_bought(
    client: httpx.AsyncClient, broker: Broker, alice: str
) -> None:
    # given a young shop: the recommender knows nothing to suggest for alice
    await placed(client, alice, [("outdoor-headlamp", 2)])

    async def recommender(request: dict[str, Any]) -> dict[str, Any]:
        return {"items": [], "strategy": "popular"}

    server = await responder(broker, recommender)
    try:
        response = await client.get("/recommendations", params={"limit": 3}, headers=bearer(alice))
    finally:
        await server.stop()

    # then she still sees three products, none of which she bought already
    body = response.json()
    assert response.status_code == 200
    assert body["strategy"] == "popular"
    assert len(body["items"]) == 3
    assert "outdoor-headlamp" not in [item["product_id"] for item in body["items"]]
