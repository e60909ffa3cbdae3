"""The orders HTTP API against a real broker and a real Mongo-wire server: catalog, placing
orders (outbox, idempotency), ownership, pagination and validation."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from orders.store import OrdersStore
from tests.integration.test_orders_support import (  # noqa: F401 - pytest fixtures, used by name
    Issuer,
    JwksServer,
    alice_token,
    bearer,
    orders_api,
    orders_client,
    orders_issuer,
    orders_users,
    place,
    placed,
)
from tests.support.poll import stays
from tests.support.tap import EventTap

KENYA, DDIA, FILTERS = "coffee-kenya-aa", "book-ddia", "brew-paper-filters"


@pytest.fixture
def bob(issuer: Issuer) -> str:
    return issuer.token("user-bob", "bob")


async def _true(value: bool) -> bool:
    return value


# -- catalog ---------------------------------------------------------------------------------
async def test_catalog_lists_about_fifty_products_with_decimal_string_prices(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/products")

    assert response.status_code == 200
    products = response.json()
    assert 40 <= len(products) <= 60
    assert len({p["category"] for p in products}) >= 4
    for product in products:
        assert set(product) == {"id", "name", "price", "currency", "category"}
        assert isinstance(product["price"], str) and Decimal(product["price"]) > 0
        assert product["currency"] == "EUR"


async def test_one_product_by_id_and_404_for_an_unknown_one(client: httpx.AsyncClient) -> None:
    found = await client.get(f"/products/{KENYA}")
    missing = await client.get("/products/no-such-thing")

    assert found.status_code == 200
    assert found.json() == {
        "id": KENYA,
        "name": "Kenya AA, whole beans 250 g",
        "price": "13.40",
        "currency": "EUR",
        "category": "coffee",
    }
    assert missing.status_code == 404
    assert "detail" in missing.json()


async def test_catalog_load_is_idempotent_across_restarts(
    make_settings: Any, users: JwksServer
) -> None:
    async with orders_api(make_settings, users.url) as first:
        before = (await first.get("/products")).json()
    async with orders_api(make_settings, users.url) as second:
        after = (await second.get("/products")).json()

    assert after == before


# -- placing an order ------------------------------------------------------------------------
async def test_placing_an_order_records_one_order_created_with_catalog_prices(
    client: httpx.AsyncClient, tap: EventTap, alice: str
) -> None:
    # when alice orders two lines, with a correlation id on the request
    response = await client.post(
        "/orders",
        json={
            "items": [
                {"product_id": KENYA, "quantity": 3},
                {"product_id": FILTERS, "quantity": 1},
            ],
            "payment_method": "card_declined",
        },
        headers=bearer(alice) | {"X-Correlation-ID": "checkout-42"},
    )

    # then the order is pending, priced from the catalog, money as decimal strings
    assert response.status_code == 201, response.text
    order = response.json()
    assert response.headers["Location"] == f"/orders/{order['id']}"
    assert order["user_id"] == "user-alice"
    assert order["status"] == "pending"
    assert order["items"] == [
        {
            "product_id": KENYA,
            "name": "Kenya AA, whole beans 250 g",
            "quantity": 3,
            "unit_price": "13.40",
        },
        {
            "product_id": FILTERS,
            "name": "Paper filters, 100 pieces",
            "quantity": 1,
            "unit_price": "4.50",
        },
    ]
    assert order["total"] == "44.70"
    assert order["currency"] == "EUR"
    assert order["created_at"] == order["updated_at"]
    # and exactly one OrderCreated carries it, with the request's correlation id
    [event] = await tap.wait_for("OrderCreated")
    assert event["source"] == "/orders"
    assert event["correlationid"] == "checkout-42"
    assert event["data"] == {
        "order_id": order["id"],
        "user_id": "user-alice",
        "username": "alice",
        "items": [
            {"product_id": KENYA, "quantity": 3, "unit_price": "13.40"},
            {"product_id": FILTERS, "quantity": 1, "unit_price": "4.50"},
        ],
        "total": "44.70",
        "currency": "EUR",
        "payment_method": "card_declined",
    }
    await stays(lambda: _true(len(tap.events("OrderCreated")) == 1), seconds=0.5)
    # and the owner reads the same order back
    again = await client.get(f"/orders/{order['id']}", headers=bearer(alice))
    assert again.json() == order


async def test_payment_method_defaults_to_card_ok(
    client: httpx.AsyncClient, tap: EventTap, alice: str
) -> None:
    await placed(client, alice, [(DDIA, 1)])

    [event] = await tap.wait_for("OrderCreated")
    assert event["data"]["payment_method"] == "card_ok"


async def test_total_is_exact_decimal_arithmetic(client: httpx.AsyncClient, alice: str) -> None:
    # 0.1 + 0.2 style float errors would show in the cents
    order = await placed(client, alice, [("brew-milk-frother", 100), ("kitchen-tea-towels", 3)])

    assert order["total"] == str(Decimal("15.99") * 100 + Decimal("19.90") * 3)
    assert order["total"] == "1658.70"


# -- idempotency -----------------------------------------------------------------------------
async def test_repeated_idempotency_key_returns_the_first_order_and_creates_nothing(
    client: httpx.AsyncClient, tap: EventTap, alice: str
) -> None:
    key = {"Idempotency-Key": "checkout-7f3a"}
    first = await place(client, alice, [(KENYA, 1)], headers=key)
    second = await place(client, alice, [(KENYA, 1)], headers=key)
    # even a different body under the same key is the same request repeated
    third = await place(client, alice, [(DDIA, 5)], headers=key)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json() == third.json()
    listing = (await client.get("/orders", headers=bearer(alice))).json()
    assert [o["id"] for o in listing["items"]] == [first.json()["id"]]
    await tap.wait_for("OrderCreated")
    await stays(lambda: _true(len(tap.events("OrderCreated")) == 1), seconds=0.5)


async def test_concurrent_requests_with_one_idempotency_key_create_one_order(
    client: httpx.AsyncClient, tap: EventTap, alice: str
) -> None:
    key = {"Idempotency-Key": "double-click"}

    responses = await asyncio.gather(
        *(place(client, alice, [(KENYA, 2)], headers=key) for _ in range(5))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    listing = (await client.get("/orders", headers=bearer(alice))).json()
    assert len(listing["items"]) == 1
    await tap.wait_for("OrderCreated")
    await stays(lambda: _true(len(tap.events("OrderCreated")) == 1), seconds=0.5)


async def test_the_same_key_from_another_user_is_another_order(
    client: httpx.AsyncClient, alice: str, bob: str
) -> None:
    key = {"Idempotency-Key": "k-1"}
    mine = await place(client, alice, [(KENYA, 1)], headers=key)
    theirs = await place(client, bob, [(KENYA, 1)], headers=key)

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["user_id"] == "user-bob"


# -- ownership -------------------------------------------------------------------------------
async def test_another_users_order_is_a_404_exactly_like_a_missing_one(
    client: httpx.AsyncClient, alice: str, bob: str
) -> None:
    order = await placed(client, alice, [(KENYA, 1)])

    as_bob = await client.get(f"/orders/{order['id']}", headers=bearer(bob))
    missing = await client.get("/orders/00000000-0000-4000-8000-000000000000", headers=bearer(bob))
    bobs_list = await client.get("/orders", headers=bearer(bob))

    assert as_bob.status_code == missing.status_code == 404
    assert as_bob.json() == missing.json()
    assert bobs_list.json() == {"items": [], "next_cursor": None}


# -- pagination ------------------------------------------------------------------------------
async def test_pages_are_newest_first_without_overlap_and_only_the_callers(
    client: httpx.AsyncClient, alice: str, bob: str
) -> None:
    created = [(await placed(client, alice, [(KENYA, n)]))["id"] for n in range(1, 8)]
    await placed(client, bob, [(DDIA, 1)])

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/orders", params=params, headers=bearer(alice))
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["items"]) <= 3
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == list(reversed(created))


async def test_a_page_deep_in_a_long_history_is_read_from_the_index(
    client: httpx.AsyncClient, alice: str, mongo: Any, db_prefix: str
) -> None:
    orders = [await placed(client, alice, [(FILTERS, n)]) for n in range(1, 6)]
    store = OrdersStore(mongo, f"{db_prefix}orders")
    after = (datetime.fromisoformat(orders[2]["created_at"]), orders[2]["id"])

    cursor = store.orders.find(store.page_query("user-alice", after)).sort("page_key", -1)
    plan = await cursor.limit(3).explain()

    winning = str(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in winning and "COLLSCAN" not in winning
    assert [
        doc["_id"]
        async for doc in store.orders.find(store.page_query("user-alice", after)).sort(
            "page_key", -1
        )
    ] == [orders[1]["id"], orders[0]["id"]]


async def test_default_page_size_is_twenty(client: httpx.AsyncClient, alice: str) -> None:
    for _ in range(21):
        await placed(client, alice, [(FILTERS, 1)])

    page = (await client.get("/orders", headers=bearer(alice))).json()

    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None


async def test_bad_page_parameters_are_422_naming_the_parameter(
    client: httpx.AsyncClient, alice: str
) -> None:
    for params in (
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"cursor": ""},
        {"cursor": "WyJ5ZXN0ZXJkYXkiLCJ4Il0"},  # base64 of ["yesterday","x"]
    ):
        response = await client.get("/orders", params=params, headers=bearer(alice))

        assert response.status_code == 422, f"{params}: {response.text}"
        assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


# -- validation ------------------------------------------------------------------------------
def line(product_id: Any = KENYA, quantity: Any = 1) -> dict[str, Any]:
    return {"product_id": product_id, "quantity": quantity}


INVALID_ORDERS: list[tuple[str, Any, list[Any]]] = [
    ("no items", {"items": []}, ["body", "items"]),
    ("items missing", {}, ["body", "items"]),
    ("items not a list", {"items": "all"}, ["body", "items"]),
    ("51 lines", {"items": [line(f"p{i}") for i in range(51)]}, ["body", "items"]),
    (
        "unknown product",
        {"items": [line(), line("unobtainium")]},
        ["body", "items", 1, "product_id"],
    ),
    ("empty product id", {"items": [line("")]}, ["body", "items", 0, "product_id"]),
    ("quantity 0", {"items": [line(quantity=0)]}, ["body", "items", 0, "quantity"]),
    ("quantity 101", {"items": [line(quantity=101)]}, ["body", "items", 0, "quantity"]),
    ("negative quantity", {"items": [line(quantity=-3)]}, ["body", "items", 0, "quantity"]),
    ("fractional quantity", {"items": [line(quantity=1.5)]}, ["body", "items", 0, "quantity"]),
    ("quantity as string", {"items": [line(quantity="2")]}, ["body", "items", 0, "quantity"]),
    ("quantity missing", {"items": [{"product_id": KENYA}]}, ["body", "items", 0, "quantity"]),
    (
        "duplicate product lines",
        {"items": [line(KENYA), line(DDIA), line(KENYA, 2)]},
        ["body", "items", 2, "product_id"],
    ),
    (
        "unknown payment method",
        {"items": [line()], "payment_method": "iou"},
        ["body", "payment_method"],
    ),
    ("client-sent total", {"items": [line()], "total": "0.01"}, ["body", "total"]),
    (
        "client-sent unit price",
        {"items": [{**line(), "unit_price": "0.01"}]},
        ["body", "items", 0, "unit_price"],
    ),
    ("body not an object", [line()], ["body"]),
]


async def test_every_validation_rule_gives_422_naming_the_field(
    client: httpx.AsyncClient, tap: EventTap, alice: str
) -> None:
    for name, body, loc in INVALID_ORDERS:
        response = await client.post("/orders", json=body, headers=bearer(alice))

        assert response.status_code == 422, f"{name}: {response.status_code} {response.text}"
        locs = [error["loc"] for error in response.json()["detail"]]
        assert loc in locs, f"{name}: {locs}"

    # and none of them stored or published anything
    listing = (await client.get("/orders", headers=bearer(alice))).json()
    assert listing["items"] == []
    await stays(lambda: _true(tap.events("OrderCreated") == []), seconds=0.5)


async def test_malformed_bodies_and_a_bad_idempotency_key_are_422_not_500(
    client: httpx.AsyncClient, alice: str
) -> None:
    broken = await client.post(
        "/orders",
        content=b'{"items": [',
        headers=bearer(alice) | {"Content-Type": "application/json"},
    )
    # FastAPI's own 422 handler fails on these bytes: it answered 500 before orders
    # rendered validation errors itself
    not_utf8 = await client.post(
        "/orders",
        content=b"\x80\x81{",
        headers=bearer(alice) | {"Content-Type": "text/plain"},
    )
    nan = await client.post(
        "/orders",
        content=b'{"items": [{"product_id": "book-ddia", "quantity": NaN}]}',
        headers=bearer(alice) | {"Content-Type": "application/json"},
    )
    long_key = await place(client, alice, [(KENYA, 1)], headers={"Idempotency-Key": "k" * 256})

    assert broken.status_code == 422
    assert not_utf8.status_code == 422
    assert nan.status_code == 422
    assert nan.json()["detail"][0]["loc"] == ["body", "items", 0, "quantity"]
    assert long_key.status_code == 422
    assert long_key.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


# -- operations ------------------------------------------------------------------------------
async def test_ready_when_database_and_broker_answer(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    ready = await client.get("/health/ready")

    assert live.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"mongodb": True, "rabbitmq": True, "consumers": True}


async def test_openapi_describes_the_contract_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()

    assert {"/products", "/products/{product_id}", "/orders", "/orders/{order_id}"} <= set(
        spec["paths"]
    )
    assert "/recommendations" in spec["paths"]
