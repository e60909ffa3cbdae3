"""Transactional outbox and inbox against a real Mongo-wire server and a real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from events.bus import Broker, Consumer
from events.contracts import UserRegistered
from events.store import Store, Tx
from tests.support.helpers import publish_event, target_of, via_proxy
from tests.support.poll import eventually, stays
from tests.support.proxy import TcpProxy


def user(n: int = 1) -> UserRegistered:
    return UserRegistered(user_id=f"u{n}", username=f"user{n}", email=f"user{n}@example.com")


@pytest.fixture
async def store(mongo: Any, db_prefix: str) -> Store:
    s = Store(mongo, f"{db_prefix}svc", source="/tests")
    await s.setup()
    return s


async def register(store: Store, n: int) -> str:
    async def work(tx: Tx) -> str:
        await store.db["users"].insert_one({"_id": f"u{n}"}, session=tx.session)
        return await tx.record(user(n))

    return await store.transaction(work)


async def test_committed_event_is_published_by_relay_without_waiting_for_poll(
    store: Store, broker: Broker, tap: Any
) -> None:
    relay = asyncio.create_task(store.outbox.run_relay(broker, poll_seconds=30))
    try:
        event_id = await register(store, 1)
        # the poll interval is 30 s: only the post-commit wake-up can deliver it in time
        events = await tap.wait_for("UserRegistered", timeout=10)
        assert events[0]["id"] == event_id
        assert await store.outbox.pending_count() == 0
    finally:
        relay.cancel()


async def test_aborted_transaction_publishes_nothing(
    store: Store, broker: Broker, tap: Any
) -> None:
    async def work(tx: Tx) -> None:
        await tx.record(user(1))
        raise ValueError("business rule violated after recording")

    with pytest.raises(ValueError, match="business rule"):
        await store.transaction(work)
    assert await store.outbox.pending_count() == 0
    assert await store.outbox.publish_pending(broker) == 0
    await stays(lambda: _is(tap.events() == []), seconds=0.5)


async def test_event_survives_crash_between_commit_and_publish(
    store: Store, broker: Broker, tap: Any
) -> None:
    # given a commit whose process died before the relay published (no relay running)
    event_id = await register(store, 1)
    assert await store.outbox.pending_count() == 1
    # when a relay starts later (the restarted process)
    relay = asyncio.create_task(store.outbox.run_relay(broker, poll_seconds=0.2))
    try:
        events = await tap.wait_for("UserRegistered")
        assert [e["id"] for e in events] == [event_id]
    finally:
        relay.cancel()


async def test_broker_outage_delays_events_and_loses_none(
    store: Store, amqp_url: str, tap: Any
) -> None:
    proxy = TcpProxy(*target_of(amqp_url))
    await proxy.start()
    broker = Broker(via_proxy(amqp_url, proxy.port), name="outage")
    await broker.connect(attempts=3)
    relay = asyncio.create_task(store.outbox.run_relay(broker, poll_seconds=0.2))
    try:
        # when the broker becomes unreachable while state changes commit
        proxy.cut()
        ids = [await register(store, n) for n in range(5)]
        await stays(lambda: _is(tap.events() == []), seconds=0.5)
        assert await store.outbox.pending_count() == 5
        # then they all arrive once it is back
        proxy.restore()
        events = await tap.wait_for("UserRegistered", 5, timeout=45)
        assert sorted(e["id"] for e in events) == sorted(ids)
        await eventually(lambda: _is(len(tap.events()) == 5))
    finally:
        relay.cancel()
        await broker.close()
        await proxy.stop()


async def test_two_relays_publish_each_event_once(store: Store, amqp_url: str, tap: Any) -> None:
    brokers = [Broker(amqp_url, name=f"replica-{i}") for i in range(2)]
    for b in brokers:
        await b.connect(attempts=3)
    ids = [await register(store, n) for n in range(50)]
    relays = [asyncio.create_task(store.outbox.run_relay(b, poll_seconds=0.05)) for b in brokers]
    try:
        await tap.wait_for("UserRegistered", 50)
        await stays(lambda: _is(len(tap.events()) == 50), seconds=0.5)
        assert sorted(e["id"] for e in tap.events()) == sorted(ids)
    finally:
        for r in relays:
            r.cancel()
        for b in brokers:
            await b.close()


class OutboxCommands(monitoring.CommandListener):
    """The database commands sent about the ``outbox`` collection, by name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) == "outbox":
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_committed_event_costs_the_relay_three_database_commands(
    mongodb_url: str, db_prefix: str, broker: Broker, tap: Any
) -> None:
    # given a relay that is idle, with the database watched
    commands = OutboxCommands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        mongodb_url, event_listeners=[commands], tz_aware=True
    )
    store = Store(client, f"{db_prefix}svc", source="/tests")
    await store.setup()
    relay = asyncio.create_task(store.outbox.run_relay(broker, poll_seconds=30))
    try:
        await eventually(lambda: _is("aggregate" in commands.names), what="first idle pass")
        commands.names.clear()
        # when one event commits
        await register(store, 1)
        await tap.wait_for("UserRegistered")
        # then the relay read it with its body, claimed it and marked it sent, and then
        # waited: no re-read of a batch it fully claimed, no second look after a short batch,
        # no backlog count per wake-up (the database is the dearest part of an order)
        expected = ["insert", "find", "update", "update"]
        await eventually(lambda: _is(len(commands.names) >= len(expected)), what="mark sent")
        await stays(lambda: _is(commands.names == expected), seconds=0.5)
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await client.close()


async def test_duplicate_delivery_has_one_effect(
    store: Store, broker: Broker, amqp_url: str
) -> None:
    # given a handler whose effect goes through the inbox
    async def on_user_registered(event: UserRegistered, ctx: Store) -> None:
        async def work(tx: Tx) -> None:
            await ctx.db["welcomes"].insert_one(
                {"_id": str(uuid.uuid4()), "user_id": event.user_id}, session=tx.session
            )

        await ctx.handle_once(work)

    consumer = Consumer(
        broker, f"svc-{uuid.uuid4().hex[:8]}", {UserRegistered: on_user_registered}, store
    )
    await consumer.start()
    # when the same event is delivered three times
    await publish_event(amqp_url, user(1), times=3)
    await publish_event(amqp_url, user(2))
    # then it had one effect
    await eventually(lambda: store.db["welcomes"].count_documents({"user_id": "u2"}))
    assert await store.db["welcomes"].count_documents({"user_id": "u1"}) == 1
    assert await store.inbox.count_documents({}) == 2
    await consumer.stop()


async def _is(value: Any) -> Any:
    return value
