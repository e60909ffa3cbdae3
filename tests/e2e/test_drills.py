"""Fault drills against the real processes. Each breaks something on purpose and counts
what was sent, what was lost and what took effect twice: all must end 0 lost, 0 double."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest

from events.contracts import PaymentCompleted, PaymentFailed
from tests.support.helpers import publish_event, publish_raw, queue_messages, target_of, via_proxy
from tests.support.poll import eventually, stays
from tests.support.proxy import TcpProxy
from tests.support.servers import Rabbit
from tests.support.shop import Customer, Shop
from tests.support.smtp import SmtpServer
from tests.support.system import System
from tests.support.tap import EventTap

pytestmark = pytest.mark.e2e


def payments_by_order(tap: EventTap) -> dict[str, set[str]]:
    """order id -> the distinct payment ids published for it (two would be a double charge)."""
    out: dict[str, set[str]] = defaultdict(set)
    for event in tap.events():
        if event["type"] in ("PaymentCompleted", "PaymentFailed"):
            out[event["data"]["order_id"]].add(event["data"]["payment_id"])
    return out


def tally(name: str, sent: int, lost: int, double: int) -> None:
    print(f"\n[drill] {name}: sent={sent} lost={lost} double={double}")
    assert (lost, double) == (0, 0), f"{name}: lost={lost} double={double}"


async def settle_all(
    shop: Shop, who: Customer, order_ids: list[str], status: str = "paid", timeout: float = 90
) -> int:
    """Wait for every order to reach ``status``; returns how many never did (lost)."""
    lost = 0
    for order_id in order_ids:
        try:
            await shop.wait_status(who, order_id, status, timeout=timeout)
        except AssertionError:
            lost += 1
    return lost


async def place_orders(shop: Shop, who: Customer, product: str, n: int) -> list[str]:
    sem = asyncio.Semaphore(8)

    async def one() -> str:
        async with sem:
            return str((await shop.order(who, [(product, 1)]))["id"])

    return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.fixture
async def shop(system: System) -> Any:
    s = Shop(system.users_url, system.orders_url)
    yield s
    await s.close()


async def test_drill_1_kill_9_payments_while_orders_flow(
    system: System, shop: Shop, tap: EventTap
) -> None:
    system.start()
    await system.ready()
    who = await shop.register("kill9")
    product = (await shop.products())[0]["id"]
    # when payments is killed with SIGKILL while 50 orders flow, and restarted
    first = await place_orders(shop, who, product, 20)
    system.kill("payments")
    rest = await place_orders(shop, who, product, 30)
    system.start(["payments"])
    orders = first + rest
    # then every order ends paid, with exactly one payment each
    lost = await settle_all(shop, who, orders)
    await eventually(lambda: _is(len(payments_by_order(tap)) >= len(orders) - lost), timeout=30)
    double = sum(1 for ids in payments_by_order(tap).values() if len(ids) > 1)
    tally("kill -9 payments", len(orders), lost, double)


async def test_drill_2_broker_unreachable_while_orders_are_placed(
    system: System, shop: Shop, tap: EventTap, amqp_url: str
) -> None:
    proxy = TcpProxy(*target_of(amqp_url))
    await proxy.start()
    system.amqp_url = via_proxy(amqp_url, proxy.port)
    try:
        system.start()
        await system.ready()
        who = await shop.register("outage")
        product = (await shop.products())[0]["id"]
        # when the broker is unreachable for every service
        proxy.cut()
        placed = await place_orders(shop, who, product, 10)  # the API keeps accepting
        await stays(lambda: _is(not payments_by_order(tap)), seconds=1.0)
        proxy.restore()
        # then after recovery every event is delivered, once
        lost = await settle_all(shop, who, placed, timeout=120)
        double = sum(1 for ids in payments_by_order(tap).values() if len(ids) > 1)
        created = [e["data"]["order_id"] for e in tap.events("OrderCreated")]
        assert sorted(set(created)) == sorted(placed)
        tally("broker unreachable", len(placed), lost, double)
    finally:
        await proxy.stop()


async def test_drill_3_close_all_connections_under_load(
    system: System, shop: Shop, smtp: SmtpServer, rabbit: Rabbit, amqp_url: str
) -> None:
    system.start()
    await system.ready()
    who = await shop.register("reconnect")
    product = (await shop.products())[0]["id"]
    before = await place_orders(shop, who, product, 10)
    vhost = unquote(urlsplit(amqp_url).path[1:])
    # when the broker closes every connection of the vhost under load
    rabbit.rabbitmqctl("close_all_connections", "-p", vhost, "fault drill 3")
    during = await place_orders(shop, who, product, 10)
    # then every service is back: really consuming, not just connected
    await system.ready(timeout=90)
    after = await place_orders(shop, who, product, 5)
    orders = before + during + after
    lost = await settle_all(shop, who, orders, timeout=120)
    # notifier consumed too: one confirmation and one receipt per order, plus the welcome
    expected = 1 + 2 * len(orders)
    await eventually(lambda: _is(len(smtp.mailbox.to(who.email)) >= expected), timeout=60)
    await stays(lambda: _is(len(smtp.mailbox.to(who.email)) == expected), seconds=1.0)
    tally("close_all_connections", len(orders), lost, len(smtp.mailbox.to(who.email)) - expected)


async def test_drill_4_poison_messages_are_parked_and_good_traffic_flows(
    system: System, shop: Shop, amqp_url: str
) -> None:
    system.start()
    await system.ready()
    consumers = {
        "user.registered": ["notifier", "analytics"],
        "order.created": ["payments", "notifier", "analytics", "recommender"],
        "payment.completed": ["orders", "notifier", "analytics", "recommender"],
        "payment.failed": ["orders", "notifier", "analytics"],
    }
    # when a poison message is published on every routing key
    for key in consumers:
        await publish_raw(amqp_url, key, b"\x00 not an event", message_id=f"poison-{key}")
    # then each lands in the DLQ of every consumer of that key, with a reason
    lost = 0
    for key, services in consumers.items():
        for service in services:

            async def parked(service: str = service, key: str = key) -> list[Any]:
                found = await queue_messages(amqp_url, f"{service}.dlq")
                return [m for m in found if m.message_id == f"poison-{key}"]

            try:
                messages = await eventually(parked, timeout=30, what=f"{key} in {service}.dlq")
                assert messages[0].headers.get("x-error")
            except AssertionError:
                lost += 1
    # and good traffic keeps flowing
    who = await shop.register("afterpoison")
    order = await shop.order(who, [((await shop.products())[0]["id"], 1)])
    await shop.wait_status(who, order["id"], "paid")
    tally("poison messages", sum(len(s) for s in consumers.values()), lost, 0)


class Duplicator:
    """Republishes every event on the exchange once more, same id: every consumer receives
    every event twice."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.copied = 0

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(self.url)
        channel = await self.connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            "shop.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(exchange, "#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if (message.headers or {}).get("x-duplicate"):
                await message.ack()
                return
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    content_type=message.content_type,
                    message_id=message.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"x-duplicate": 1},
                ),
                routing_key=message.routing_key or "",
                mandatory=False,
            )
            self.copied += 1
            await message.ack()

        await queue.consume(on_message)

    async def stop(self) -> None:
        await self.connection.close()


async def test_drill_5_every_event_delivered_twice(
    system: System, shop: Shop, smtp: SmtpServer, tap: EventTap, amqp_url: str
) -> None:
    duplicator = Duplicator(amqp_url)
    await duplicator.start()
    try:
        system.start()
        await system.ready()
        who = await shop.register("twice")
        product = (await shop.products())[0]["id"]
        orders = await place_orders(shop, who, product, 10)
        lost = await settle_all(shop, who, orders)
        # one payment per order, one mail per notice, despite every event arriving twice
        expected_mails = 1 + 2 * len(orders)
        await eventually(lambda: _is(len(smtp.mailbox.to(who.email)) >= expected_mails), timeout=60)
        await stays(lambda: _is(len(smtp.mailbox.to(who.email)) == expected_mails), seconds=1.5)
        assert duplicator.copied >= 1 + 2 * len(orders)
        double = sum(1 for ids in payments_by_order(tap).values() if len(ids) > 1)
        double += len(smtp.mailbox.to(who.email)) - expected_mails
        tally("every event twice", len(orders), lost, double)
    finally:
        await duplicator.stop()


async def test_drill_6_payment_results_out_of_order_keep_status_monotonic(
    system: System, shop: Shop, amqp_url: str
) -> None:
    # (each result is also delivered twice)
    # payments is not started: the test plays the payment provider's results itself
    system.start(["users", "orders"])
    await system.ready(["users", "orders"])
    who = await shop.register("saga")
    product = (await shop.products())[0]["id"]
    first_failed = await shop.order(who, [(product, 1)])
    first_paid = await shop.order(who, [(product, 1)])

    def completed(order: dict[str, Any]) -> PaymentCompleted:
        return PaymentCompleted(
            payment_id=str(uuid.uuid4()),
            order_id=order["id"],
            user_id=who.user_id,
            amount=order["total"],
            currency=order["currency"],
        )

    def failed(order: dict[str, Any]) -> PaymentFailed:
        return PaymentFailed(
            payment_id=str(uuid.uuid4()),
            order_id=order["id"],
            user_id=who.user_id,
            amount=order["total"],
            currency=order["currency"],
            reason="card declined",
        )

    seen: dict[str, list[str]] = defaultdict(list)

    async def watch() -> None:
        while True:
            for order in (first_failed, first_paid):
                status = (await shop.get_order(who, order["id"])).json()["status"]
                if not seen[order["id"]] or seen[order["id"]][-1] != status:
                    seen[order["id"]].append(status)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        await publish_event(amqp_url, failed(first_failed), times=2)
        await shop.wait_status(who, first_failed["id"], "payment_failed")
        await publish_event(amqp_url, completed(first_failed), times=2)
        await publish_event(amqp_url, completed(first_paid), times=2)
        await shop.wait_status(who, first_paid["id"], "paid")
        late = await publish_event(amqp_url, failed(first_paid))

        async def late_handled() -> bool:
            return any(
                line.get("event_id") == late.id and "handled" in str(line.get("message"))
                for line in system.log_lines("orders")
            )

        await eventually(late_handled, what="the late payment.failed handled by orders")

        async def settled() -> bool:
            return seen[first_failed["id"]][-1:] == ["payment_failed"] and seen[first_paid["id"]][
                -1:
            ] == ["paid"]

        # the watcher may lag the HTTP check above by a poll: wait for it, then hold
        await eventually(settled, what="watcher saw both final states")
        await stays(settled, seconds=1.5)
    finally:
        watcher.cancel()
    assert seen[first_failed["id"]] == ["pending", "payment_failed"]
    assert seen[first_paid["id"]] == ["pending", "paid"]
    tally("out-of-order payment results", 2, 0, 0)


async def test_drill_7_smtp_down_for_a_while(system: System, shop: Shop, smtp: SmtpServer) -> None:
    system.retry_delays = "1 2 4 8"
    system.start()
    await system.ready()
    # when the mail relay is down as a customer registers
    smtp.stop()
    who = await shop.register("nosmtp")

    async def retried() -> bool:
        return any(
            "retrying" in str(line.get("message", "")) for line in system.log_lines("notifier")
        )

    await eventually(retried, timeout=30, what="notifier retrying the welcome mail")
    # and comes back
    smtp.start()
    # then the welcome arrives, once
    await eventually(lambda: _is(len(smtp.mailbox.to(who.email)) >= 1), timeout=40)
    await stays(lambda: _is(len(smtp.mailbox.to(who.email)) == 1), seconds=1.5)
    tally("smtp down", 1, 0, len(smtp.mailbox.to(who.email)) - 1)


async def test_drill_8_worker_sigterm_mid_handler(
    system: System, shop: Shop, tap: EventTap
) -> None:
    system.extra_env["PAYMENT_LATENCY_MS"] = "400"
    system.start()
    await system.ready()
    who = await shop.register("sigterm")
    product = (await shop.products())[0]["id"]
    orders = await place_orders(shop, who, product, 12)

    async def handling() -> bool:
        return any("OrderCreated" in json.dumps(line) for line in system.log_lines("payments"))

    await eventually(handling, timeout=30, what="payments working")
    # when payments gets SIGTERM in the middle of its work
    code = system.stop("payments")
    assert code == 0
    system.start(["payments"])
    # then nothing is half-applied: every order is paid, once
    lost = await settle_all(shop, who, orders)
    double = sum(1 for ids in payments_by_order(tap).values() if len(ids) > 1)
    tally("SIGTERM mid-handler", len(orders), lost, double)


async def test_one_correlation_id_tells_the_story_in_all_six_services(
    system: System, shop: Shop, smtp: SmtpServer
) -> None:
    system.start()
    await system.ready()
    correlation = f"story-{uuid.uuid4()}"
    headers = {"X-Correlation-ID": correlation}
    password = "never log me please"
    username = f"story_{uuid.uuid4().hex[:6]}"
    # a client session that sends its own correlation id
    r = await shop.http.post(
        f"{system.users_url}/users",
        json={"username": username, "email": f"{username}@example.com", "password": password},
        headers=headers,
    )
    assert r.status_code == 201
    assert r.headers["X-Correlation-ID"] == correlation
    token = (
        await shop.http.post(
            f"{system.users_url}/auth/token",
            data={"username": username, "password": password},
            headers=headers,
        )
    ).json()["access_token"]
    who = Customer(username, f"{username}@example.com", r.json()["id"], token)
    product = (await shop.products())[0]["id"]
    order = await shop.order(who, [(product, 1)], headers=headers)
    await shop.wait_status(who, order["id"], "paid")
    await eventually(lambda: _is(len(smtp.mailbox.to(who.email)) >= 3), timeout=30)

    def mentions(service: str) -> bool:
        return any(line.get("correlationid") == correlation for line in system.log_lines(service))

    async def everywhere() -> list[str]:
        missing = [
            s
            for s in ("users", "orders", "payments", "notifier", "analytics", "recommender")
            if not mentions(s)
        ]
        return [] if missing else ["ok"]

    try:
        await eventually(everywhere, timeout=20, what="correlation id in all six logs")
    except AssertionError:
        missing = [
            s
            for s in ("users", "orders", "payments", "notifier", "analytics", "recommender")
            if not mentions(s)
        ]
        raise AssertionError(f"correlation id missing from: {missing}") from None
    for service in system.procs:
        text = system.log_path(service).read_text(errors="replace")
        assert password not in text, service
        assert token not in text, service
        assert "$argon2" not in text, service


async def _is(value: Any) -> Any:
    return value
