"""The bus against a real RabbitMQ: publish, consume, retry, dead-letter, reconnect."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest

from events.bus import (
    H_ATTEMPT,
    H_ERROR,
    H_ROUTING_KEY,
    Broker,
    Consumer,
    current_delivery,
    retry_queue_name,
)
from events.contracts import CloudEvent, PaymentCompleted, UserRegistered
from tests.conftest import TEST_RETRY_DELAYS
from tests.support.helpers import publish_event, publish_raw, queue_messages, target_of, via_proxy
from tests.support.poll import eventually, stays
from tests.support.proxy import TcpProxy
from tests.support.servers import Rabbit


def user(n: int = 1) -> UserRegistered:
    return UserRegistered(user_id=f"u{n}", username=f"user{n}", email=f"user{n}@example.com")


def service_name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


async def test_published_event_reaches_subscriber_as_model(broker: Broker, amqp_url: str) -> None:
    # given a consumer subscribed to UserRegistered
    seen: list[tuple[UserRegistered, Any]] = []

    async def on_user_registered(event: UserRegistered, ctx: Any) -> None:
        seen.append((event, current_delivery()))

    consumer = Consumer(broker, service_name(), {UserRegistered: on_user_registered}, None)
    await consumer.start()
    # when an event is published with a correlation id
    envelope = CloudEvent.wrap(user(), source="/users", correlationid="corr-1")
    await broker.publish(envelope, UserRegistered.ROUTING_KEY)
    # then the handler receives the typed model and the delivery metadata
    await eventually(lambda: _async(seen), what="handler call")
    event, delivery = seen[0]
    assert event == user()
    assert delivery.event_id == envelope.id
    assert delivery.correlationid == "corr-1"
    assert delivery.attempt == 1
    await consumer.stop()


async def test_published_message_is_persistent_cloudevent(broker: Broker, tap: Any) -> None:
    envelope = CloudEvent.wrap(user(), source="/users")
    await broker.publish(envelope, UserRegistered.ROUTING_KEY)
    await tap.wait_for("UserRegistered")
    message = tap.messages[0]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/cloudevents+json"
    assert message.message_id == envelope.id
    assert message.routing_key == "user.registered"
    body = json.loads(message.body)
    assert body["specversion"] == "1.0"
    assert body["data"] == {"user_id": "u1", "username": "user1", "email": "user1@example.com"}


async def test_publish_many_confirms_every_message(broker: Broker, tap: Any) -> None:
    items = [(CloudEvent.wrap(user(i), source="/users"), "user.registered") for i in range(200)]
    errors = await broker.publish_many(items)
    assert errors == [None] * 200
    await tap.wait_for("UserRegistered", 200)


async def test_failing_handler_is_retried_with_delay_then_dead_lettered(
    broker: Broker, amqp_url: str
) -> None:
    # given a handler that always fails
    attempts: list[tuple[int, str | None]] = []

    async def on_user_registered(event: UserRegistered, ctx: Any) -> None:
        delivery = current_delivery()
        assert delivery is not None
        attempts.append((delivery.attempt, delivery.via))
        raise RuntimeError("smtp is down")

    name = service_name()
    consumer = Consumer(
        broker, name, {UserRegistered: on_user_registered}, None, retry_delays=TEST_RETRY_DELAYS
    )
    await consumer.start()
    # when an event arrives
    envelope = await publish_event(amqp_url, user())
    # then it is tried 1 + len(delays) times and parked with the reason
    parked = await eventually(lambda: queue_messages(amqp_url, f"{name}.dlq"), what="parked")
    # each retry came back from the broker out of the TTL queue of its delay (x-death says
    # which queue expired it), so the waiting happened in RabbitMQ, not in the consumer
    assert attempts == [
        (1, None),
        (2, retry_queue_name(name, TEST_RETRY_DELAYS[0])),
        (3, retry_queue_name(name, TEST_RETRY_DELAYS[1])),
        (4, retry_queue_name(name, TEST_RETRY_DELAYS[2])),
    ]
    assert [retry_queue_name(name, d) for d in TEST_RETRY_DELAYS] == [
        f"{name}.retry.200ms",
        f"{name}.retry.400ms",
        f"{name}.retry.800ms",
    ]
    headers = parked[0].headers
    assert headers[H_ERROR] == "RuntimeError: smtp is down"
    assert headers[H_ATTEMPT] == 4
    assert headers[H_ROUTING_KEY] == "user.registered"
    assert parked[0].message_id == envelope.id
    await consumer.stop()


async def test_queues_are_declared_with_the_arguments_rabbitmq_3_10_needs(
    broker: Broker, amqp_url: str, rabbit: Rabbit
) -> None:
    # given a started consumer with three retry delays
    if rabbit.ctl is None:
        pytest.skip("needs rabbitmqctl to read the queue arguments back from the broker")
    name = service_name()

    async def ignore(event: UserRegistered, ctx: Any) -> None:
        return None

    consumer = Consumer(broker, name, {UserRegistered: ignore}, None, retry_delays=(0.2, 5))
    await consumer.start()
    # when we ask the broker what it holds
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/")) or "/"
    listing = rabbit.rabbitmqctl(
        "list_queues", "-p", vhost, "name", "type", "arguments", "--formatter", "json"
    )
    # rabbitmqctl lists arguments as [name, AMQP type, value] triples
    queues = {
        q["name"]: {"type": q["type"], "arguments": {k: v for k, _, v in q["arguments"]}}
        for q in json.loads(listing)
    }
    await consumer.stop()
    # then every queue is a quorum queue; the main one bounds redeliveries and dead-letters
    # at least once (3.10 defaults to at-most-once and drop-head, which can lose messages)
    assert {q["type"] for q in queues.values()} == {"quorum"}
    main = queues[name]["arguments"]
    assert main["x-delivery-limit"] == 20
    assert main["x-dead-letter-routing-key"] == f"{name}.dlq"
    assert main["x-dead-letter-strategy"] == "at-least-once"
    assert main["x-overflow"] == "reject-publish"
    # and each retry queue holds a message for its delay, then hands it back to the main queue
    for delay, ttl in ((0.2, 200), (5, 5000)):
        retry = queues[retry_queue_name(name, delay)]["arguments"]
        assert retry["x-message-ttl"] == ttl
        assert retry["x-dead-letter-routing-key"] == name
        assert retry["x-dead-letter-strategy"] == "at-least-once"
    assert f"{name}.dlq" in queues


async def test_unparseable_message_is_parked_and_next_message_still_handled(
    broker: Broker, amqp_url: str
) -> None:
    seen: list[UserRegistered] = []

    async def on_user_registered(event: UserRegistered, ctx: Any) -> None:
        seen.append(event)

    name = service_name()
    consumer = Consumer(broker, name, {UserRegistered: on_user_registered}, None)
    await consumer.start()
    # when garbage, a valid envelope with invalid data, and a good event arrive
    await publish_raw(amqp_url, "user.registered", b"{not json", message_id="poison-1")
    bad = CloudEvent.wrap(user(), source="/t").model_copy(update={"data": {"user_id": 1}})
    await publish_raw(amqp_url, "user.registered", bad.to_json(), message_id="poison-2")
    await publish_event(amqp_url, user(2))
    # then the good one is handled and both bad ones are parked at the first attempt
    await eventually(lambda: _async(seen), what="good message")
    parked = await eventually(
        lambda: _at_least(queue_messages(amqp_url, f"{name}.dlq"), 2), what="2 parked"
    )
    assert {m.message_id for m in parked} == {"poison-1", "poison-2"}
    assert all(m.headers[H_ATTEMPT] == 1 for m in parked)
    assert "ValidationError" in str(parked[0].headers[H_ERROR])
    assert seen == [user(2)]
    await consumer.stop()


async def test_handler_that_recovers_on_retry_is_handled_once(
    broker: Broker, amqp_url: str
) -> None:
    calls: list[int] = []

    async def flaky(event: PaymentCompleted, ctx: Any) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("transient")

    name = service_name()
    consumer = Consumer(
        broker, name, {PaymentCompleted: flaky}, None, retry_delays=TEST_RETRY_DELAYS
    )
    await consumer.start()
    await publish_event(
        amqp_url,
        PaymentCompleted(payment_id="p", order_id="o", user_id="u", amount="1.00", currency="EUR"),
    )
    await eventually(lambda: _async(len(calls) == 3), what="third attempt")
    await stays(lambda: _async(len(calls) == 3), seconds=sum(TEST_RETRY_DELAYS))
    assert await queue_messages(amqp_url, f"{name}.dlq") == []
    await consumer.stop()


async def test_consumer_resumes_after_broker_drops_the_connection(amqp_url: str) -> None:
    # given a consumer connected through a proxy we can cut
    proxy = TcpProxy(*target_of(amqp_url))
    await proxy.start()
    broker = Broker(via_proxy(amqp_url, proxy.port), name="cut-me")
    await broker.connect(attempts=3)
    seen: list[str] = []

    async def on_user_registered(event: UserRegistered, ctx: Any) -> None:
        seen.append(event.user_id)

    consumer = Consumer(broker, service_name(), {UserRegistered: on_user_registered}, None)
    await consumer.start()
    await publish_event(amqp_url, user(1))
    await eventually(lambda: _async(seen == ["u1"]), what="first event")
    # when the connection is cut and comes back
    proxy.cut()
    await eventually(lambda: _not(consumer.is_healthy()), what="consumer notices the cut")
    await publish_event(amqp_url, user(2))
    proxy.restore()
    # then the consumer is really back (not only the connection) and gets the next event
    await eventually(lambda: consumer.is_healthy(), timeout=30, what="reconnect")
    await eventually(lambda: _async("u2" in seen), timeout=30, what="event after reconnect")
    await consumer.stop()
    await broker.close()
    await proxy.stop()


@pytest.mark.parametrize("first_call", ["succeeds", "fails"])
async def test_handler_in_hand_finishes_when_the_connection_dies_and_is_redelivered(
    amqp_url: str, first_call: str
) -> None:
    # given a handler in the middle of its work (say, the mail is sent, not yet recorded)
    proxy = TcpProxy(*target_of(amqp_url))
    await proxy.start()
    broker = Broker(via_proxy(amqp_url, proxy.port), name="dies-mid-handler")
    await broker.connect(attempts=3)
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[int] = []
    finished: list[int] = []

    async def slow(event: UserRegistered, ctx: Any) -> None:
        me = len(calls) + 1
        calls.append(me)
        started.set()
        await release.wait()
        finished.append(me)
        if first_call == "fails" and me == 1:
            raise RuntimeError("failed after the connection died")

    name = service_name()
    consumer = Consumer(broker, name, {UserRegistered: slow}, None, retry_delays=TEST_RETRY_DELAYS)
    await consumer.start()
    await publish_event(amqp_url, user(1))
    await asyncio.wait_for(started.wait(), 10)
    # when the broker connection dies under it, and is back before the handler is done
    proxy.cut()
    await eventually(lambda: _not(consumer.is_healthy()), what="consumer notices the cut")
    proxy.restore()
    await eventually(lambda: consumer.is_healthy(), timeout=30, what="reconnect")
    # (the broker hands the unacked message over again at once)
    await eventually(lambda: _async(calls == [1, 2]), timeout=30, what="the redelivery")
    release.set()
    # then the first call was not cancelled half way: both run to their end
    await eventually(lambda: _async(sorted(finished) == [1, 2]), what="both calls to finish")
    # and the first, whose channel is gone, was neither acked nor moved to a retry queue:
    # one message, one redelivery, no third call
    await stays(lambda: _async(calls == [1, 2]), seconds=1.5)
    assert await queue_messages(amqp_url, f"{name}.dlq") == []
    await consumer.stop()
    await broker.close()
    await proxy.stop()


async def test_stop_lets_the_message_in_hand_finish(broker: Broker, amqp_url: str) -> None:
    started, release, finished = asyncio.Event(), asyncio.Event(), []

    async def slow(event: UserRegistered, ctx: Any) -> None:
        started.set()
        await release.wait()
        finished.append(event.user_id)

    name = service_name()
    consumer = Consumer(broker, name, {UserRegistered: slow}, None)
    await consumer.start()
    await publish_event(amqp_url, user(7))
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0)  # let stop() cancel the consumer before the handler finishes
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert finished == ["u7"]
    # acked: nothing left in the queue for the next start
    assert await queue_messages(amqp_url, name) == []


async def _async(value: Any) -> Any:
    return value


async def _at_least(coro: Any, n: int) -> Any:
    items = await coro
    return items if len(items) >= n else []


async def test_consumer_cancelled_by_broker_reports_unhealthy(
    broker: Broker, amqp_url: str
) -> None:
    # given a healthy consumer
    async def on_user_registered(event: UserRegistered, ctx: Any) -> None:
        return None

    name = service_name()
    consumer = Consumer(broker, name, {UserRegistered: on_user_registered}, None)
    await consumer.start()
    assert await consumer.is_healthy()
    # when the broker cancels it (its queue is deleted) while the connection stays up
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
    # then readiness tells the truth
    await eventually(lambda: _not(consumer.is_healthy()), what="unhealthy consumer")
    assert broker.is_connected()
    await consumer.stop()


async def _not(coro: Any) -> bool:
    return not await coro
