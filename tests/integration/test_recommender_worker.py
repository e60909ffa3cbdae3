"""The recommender against a real RabbitMQ and a real Mongo-wire server: it learns from
events on ``shop.events`` and answers over RPC on ``recommender.rpc``, as ``orders`` asks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from events.bus import Broker
from events.contracts import CloudEvent, OrderCreated, OrderLine, PaymentCompleted, new_id
from events.rpc import RpcClient
from recommender.bootstrap import bootstrap
from recommender.config import RPC_QUEUE, Settings
from tests.support.helpers import publish_event
from tests.support.poll import eventually
from tests.support.service import running_worker


@pytest.fixture
async def recommender(make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    settings = make_settings(Settings)
    async with running_worker(settings, bootstrap):
        yield settings


@pytest.fixture
async def rpc(broker: Broker) -> AsyncIterator[RpcClient]:
    client = RpcClient(broker, name="test")
    await client.start()
    yield client
    await client.stop()


@pytest.fixture
def handled(mongo: Any, recommender: Settings) -> Callable[[CloudEvent], Any]:
    """Wait until the recommender's inbox holds an event: it was handled and committed."""

    async def wait(envelope: CloudEvent) -> None:
        inbox = mongo[recommender.database_name]["inbox"]

        async def seen() -> bool:
            return await inbox.find_one({"_id": envelope.id}) is not None

        await eventually(seen, what=f"{envelope.type} {envelope.id} handled")

    return wait


def order_created(order_id: str, user: str, *products: str) -> OrderCreated:
    return OrderCreated(
        order_id=order_id,
        user_id=user,
        username=user,
        items=tuple(
            OrderLine(product_id=p, quantity=1, unit_price=Decimal("10.00")) for p in products
        ),
        total=Decimal("10.00") * len(products),
        currency="EUR",
    )


def payment_completed(order_id: str, user: str) -> PaymentCompleted:
    return PaymentCompleted(
        payment_id=new_id(),
        order_id=order_id,
        user_id=user,
        amount=Decimal("10.00"),
        currency="EUR",
    )


async def buy(url: str, user: str, *products: str, times: int = 1) -> list[CloudEvent]:
    order_id = new_id()
    return [
        await publish_event(url, order_created(order_id, user, *products), times=times),
        await publish_event(url, payment_completed(order_id, user), times=times),
    ]


async def ask(rpc: RpcClient, user: str, limit: int = 5) -> dict[str, Any]:
    return await rpc.call(RPC_QUEUE, {"user_id": user, "limit": limit}, timeout=5)


def products(answer: dict[str, Any]) -> list[str]:
    return [item["product_id"] for item in answer["items"]]


async def answer_with(rpc: RpcClient, user: str, strategy: str, limit: int = 5) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        answer = await ask(rpc, user, limit)
        return answer if answer["strategy"] == strategy and answer["items"] else None

    result: dict[str, Any] = await eventually(probe, what=f"{strategy} answer for {user}")
    return result


async def test_co_purchased_item_is_recommended_to_a_customer_who_bought_its_partner(
    amqp_url: str, recommender: Settings, rpc: RpcClient
) -> None:
    # given alice bought a laptop together with a mouse, and bob bought only the laptop
    await buy(amqp_url, "alice", "laptop", "mouse")
    await buy(amqp_url, "bob", "laptop")
    # when bob asks what to see next
    answer = await answer_with(rpc, "bob", "item-cf")
    # then the mouse is recommended, with the cosine similarity of the two items
    assert products(answer) == ["mouse"]
    assert answer["items"][0]["score"] == pytest.approx(1 / 2**0.5, abs=1e-6)


async def test_items_already_bought_are_never_recommended(
    amqp_url: str, recommender: Settings, rpc: RpcClient, handled: Any
) -> None:
    # given alice bought a, b, c together and bob bought a and b in two orders
    await buy(amqp_url, "alice", "a", "b", "c")
    await buy(amqp_url, "bob", "a")
    for envelope in await buy(amqp_url, "bob", "b"):
        await handled(envelope)
    # then bob is shown only c, and alice (who owns everything) none of her own items
    answer = await answer_with(rpc, "bob", "item-cf")
    assert products(answer) == ["c"]
    assert not {"a", "b", "c"} & set(products(await ask(rpc, "alice")))


async def test_unpaid_orders_do_not_count(
    amqp_url: str, recommender: Settings, rpc: RpcClient, handled: Any
) -> None:
    # given carol ordered a with x but never paid, while dave paid for a with b
    unpaid = await publish_event(amqp_url, order_created(new_id(), "carol", "a", "x"))
    await buy(amqp_url, "dave", "a", "b")
    await buy(amqp_url, "erin", "a")
    await handled(unpaid)
    # then erin, who bought a, is shown b and never x
    answer = await answer_with(rpc, "erin", "item-cf")
    assert products(answer) == ["b"]
    # and carol owns nothing: she is a new customer to the recommender
    assert (await ask(rpc, "carol"))["strategy"] == "popular"


async def test_payment_arriving_before_its_order_still_counts(
    amqp_url: str, recommender: Settings, rpc: RpcClient, handled: Any
) -> None:
    # given the payment of frank's order is delivered before the order itself
    order_id = new_id()
    await handled(await publish_event(amqp_url, payment_completed(order_id, "frank")))
    await publish_event(amqp_url, order_created(order_id, "frank", "tent", "stove"))
    await buy(amqp_url, "gina", "tent")
    # then the order is learned all the same
    answer = await answer_with(rpc, "gina", "item-cf")
    assert products(answer) == ["stove"]


async def test_new_customer_gets_the_most_popular_products(
    amqp_url: str, recommender: Settings, rpc: RpcClient, handled: Any
) -> None:
    # given p1 was bought by three customers, p2 by two and p3 by one (each event twice)
    last: list[CloudEvent] = []
    for user, items in [("u1", "p1 p2 p3"), ("u2", "p1 p2"), ("u3", "p1")]:
        last = await buy(amqp_url, user, *items.split(), times=2)
    for envelope in last:
        await handled(envelope)

    # when someone who never bought anything asks
    async def all_counted() -> dict[str, Any] | None:
        answer = await ask(rpc, "newcomer", limit=3)
        return answer if [i["score"] for i in answer["items"]] == [3.0, 2.0, 1.0] else None

    answer = await eventually(all_counted, what="popularity of p1, p2, p3")
    # then the most bought come first, scored by distinct buyers (duplicates counted once)
    assert answer == {
        "items": [
            {"product_id": "p1", "score": 3.0},
            {"product_id": "p2", "score": 2.0},
            {"product_id": "p3", "score": 1.0},
        ],
        "strategy": "popular",
    }


async def test_limit_caps_the_answer_and_bad_requests_get_an_error(
    amqp_url: str, recommender: Settings, rpc: RpcClient
) -> None:
    await buy(amqp_url, "hal", "a", "b", "c", "d")
    await buy(amqp_url, "ivy", "a")
    answer = await answer_with(rpc, "ivy", "item-cf", limit=2)
    assert len(answer["items"]) == 2
    assert "error" in await rpc.call(RPC_QUEUE, {"user_id": "", "limit": 0}, timeout=5)
