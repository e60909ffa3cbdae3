"""The order status saga: payment results from the broker move an order out of
``pending``, exactly once, and never backwards — whatever order results arrive in."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx

from events.bus import H_ERROR
from events.contracts import PaymentCompleted, PaymentFailed
from tests.integration.test_orders_support import (  # noqa: F401 - pytest fixtures, used by name
    JwksServer,
    alice_token,
    bearer,
    orders_api,
    orders_client,
    orders_issuer,
    orders_users,
    placed,
)
from tests.support.helpers import publish_event, queue_messages
from tests.support.poll import eventually, stays


def completed(order: dict[str, Any], **changes: Any) -> PaymentCompleted:
    values = {
        "payment_id": f"pay-{uuid.uuid4().hex[:8]}",
        "order_id": order["id"],
        "user_id": order["user_id"],
        "amount": Decimal(order["total"]),
        "currency": order["currency"],
    }
    return PaymentCompleted(**(values | changes))


def failed(order: dict[str, Any], **changes: Any) -> PaymentFailed:
    values = {
        "payment_id": f"pay-{uuid.uuid4().hex[:8]}",
        "order_id": order["id"],
        "user_id": order["user_id"],
        "amount": Decimal(order["total"]),
        "currency": order["currency"],
        "reason": "card_declined",
    }
    return PaymentFailed(**(values | changes))


def order_status(
    client: httpx.AsyncClient, token: str, order_id: str
) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def read() -> dict[str, Any]:
        response = await client.get(f"/orders/{order_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        return order

    return read


async def becomes(
    client: httpx.AsyncClient, token: str, order_id: str, status: str
) -> dict[str, Any]:
    read = order_status(client, token, order_id)

    async def probe() -> dict[str, Any] | None:
        order = await read()
        return order if order["status"] == status else None

    found = await eventually(probe, what=f"order {order_id} {status}")
    assert found is not None
    return found


async def keeps(client: httpx.AsyncClient, token: str, order: dict[str, Any]) -> None:
    """The order stays exactly as it is (status and updated_at) for a while."""
    read = order_status(client, token, order["id"])

    async def unchanged() -> bool:
        return await read() == order

    await stays(unchanged, seconds=1.0)


async def test_payment_completed_marks_the_order_paid(
    client: httpx.AsyncClient, amqp_url: str, alice: str
) -> None:
    order = await placed(client, alice, [("coffee-kenya-aa", 1)])

    await publish_event(amqp_url, completed(order))

    paid = await becomes(client, alice, order["id"], "paid")
    assert paid["updated_at"] > paid["created_at"]


async def test_payment_failed_marks_the_order_payment_failed(
    client: httpx.AsyncClient, amqp_url: str, alice: str
) -> None:
    order = await placed(client, alice, [("coffee-kenya-aa", 1)])

    await publish_event(amqp_url, failed(order))

    await becomes(client, alice, order["id"], "payment_failed")


async def test_failure_after_success_does_not_move_a_paid_order_back(
    client: httpx.AsyncClient, amqp_url: str, alice: str
) -> None:
    order = await placed(client, alice, [("book-ddia", 1)])
    await publish_event(amqp_url, completed(order), times=2)
    paid = await becomes(client, alice, order["id"], "paid")

    await publish_event(amqp_url, failed(order), times=2)
    await publish_event(amqp_url, completed(order))

    await keeps(client, alice, paid)


async def test_success_after_failure_does_not_revive_a_failed_order(
    client: httpx.AsyncClient, amqp_url: str, alice: str
) -> None:
    order = await placed(client, alice, [("book-ddia", 1)])
    await publish_event(amqp_url, failed(order))
    gone = await becomes(client, alice, order["id"], "payment_failed")

    await publish_event(amqp_url, completed(order), times=2)

    await keeps(client, alice, gone)


async def test_a_duplicate_delivery_of_one_event_is_handled_once(
    client: httpx.AsyncClient, amqp_url: str, alice: str, mongo: Any, db_prefix: str
) -> None:
    order = await placed(client, alice, [("book-ddia", 1)])

    envelope = await publish_event(amqp_url, completed(order), times=3)

    paid = await becomes(client, alice, order["id"], "paid")
    inbox = mongo[f"{db_prefix}orders"]["inbox"]

    async def recorded_once() -> bool:
        return await inbox.count_documents({"_id": envelope.id}) == 1

    await eventually(recorded_once, what="inbox record")
    await keeps(client, alice, paid)
    assert await queue_messages(amqp_url, "orders.dlq") == []


async def test_result_for_an_unknown_order_is_retried_then_parked_with_the_reason(
    client: httpx.AsyncClient, amqp_url: str, alice: str
) -> None:
    ghost = {"id": "no-such-order", "user_id": "user-alice", "total": "1.00", "currency": "EUR"}

    envelope = await publish_event(amqp_url, completed(ghost))

    async def parked() -> list[Any]:
        return await queue_messages(amqp_url, "orders.dlq")

    [message] = await eventually(parked, what="the result parked in orders.dlq")
    assert json.loads(message.body)["id"] == envelope.id
    assert "no-such-order" in str(message.headers[H_ERROR])
    assert message.headers["x-attempt"] == 4  # retried three times first


async def test_result_naming_another_user_is_parked_and_changes_nothing(
    client: httpx.AsyncClient, amqp_url: str, alice: str
) -> None:
    order = await placed(client, alice, [("book-ddia", 1)])

    await publish_event(amqp_url, completed(order, user_id="user-mallory"))

    async def parked() -> list[Any]:
        return await queue_messages(amqp_url, "orders.dlq")

    [message] = await eventually(parked, what="the result parked in orders.dlq")
    assert message.headers["x-attempt"] == 1  # no retry can fix it
    assert (await order_status(client, alice, order["id"])())["status"] == "pending"


async def test_results_published_while_orders_is_down_are_applied_after_restart(
    make_settings: Any, users: JwksServer, amqp_url: str, alice: str
) -> None:
    # given orders placed while the service ran, then the service stopped
    async with orders_api(make_settings, users.url) as client:
        first = await placed(client, alice, [("coffee-kenya-aa", 1)])
        second = await placed(client, alice, [("coffee-kenya-aa", 2)])
    # when the results arrive while it is down
    await publish_event(amqp_url, completed(first))
    await publish_event(amqp_url, failed(second))
    # then the restarted service applies them from its durable queue
    async with orders_api(make_settings, users.url) as client:
        await becomes(client, alice, first["id"], "paid")
        await becomes(client, alice, second["id"], "payment_failed")
