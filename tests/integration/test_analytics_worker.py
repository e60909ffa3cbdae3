"""The analytics worker against a real RabbitMQ and a real Mongo-wire server: a stream of
events on ``shop.events`` becomes the numbers ``python -m analytics report`` prints."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from analytics.bootstrap import bootstrap
from analytics.config import Settings
from analytics.report import build_report
from analytics.store import AnalyticsStore
from events.contracts import (
    CloudEvent,
    Event,
    OrderCreated,
    OrderLine,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
    new_id,
)
from tests.support.helpers import publish_raw, queue_messages
from tests.support.poll import eventually, stays
from tests.support.service import running_worker

DAY1 = datetime(2026, 12, 1, tzinfo=UTC)
DAY2 = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.fixture
async def analytics(make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    settings = make_settings(Settings)
    async with running_worker(settings, bootstrap):
        yield settings


@pytest.fixture
async def store(mongo: Any, analytics: Settings) -> AnalyticsStore:
    return AnalyticsStore(mongo, analytics.database_name)


def at(event: Event, time: datetime) -> CloudEvent:
    return CloudEvent.wrap(event, source="/tests").model_copy(update={"time": time})


async def publish(url: str, envelope: CloudEvent, *, routing_key: str, times: int = 1) -> None:
    for _ in range(times):
        await publish_raw(url, routing_key, envelope.to_json(), message_id=envelope.id)


async def send(url: str, envelopes: list[CloudEvent], *, times: int = 1) -> None:
    from events.contracts import REGISTRY

    for envelope in envelopes:
        key = REGISTRY[envelope.type].ROUTING_KEY
        await publish(url, envelope, routing_key=key, times=times)


def registered(user: str, time: datetime) -> CloudEvent:
    return at(UserRegistered(user_id=user, username=user, email=f"{user}@example.com"), time)


def ordered(order: str, user: str, lines: list[tuple[str, int, str]], time: datetime) -> CloudEvent:
    items = tuple(OrderLine(product_id=p, quantity=q, unit_price=Decimal(u)) for p, q, u in lines)
    total = sum((line.unit_price * line.quantity for line in items), Decimal("0"))
    event = OrderCreated(
        order_id=order, user_id=user, username=user, items=items, total=total, currency="EUR"
    )
    return at(event, time)


def paid(order: str, user: str, amount: str, time: datetime) -> CloudEvent:
    event = PaymentCompleted(
        payment_id=new_id(), order_id=order, user_id=user, amount=Decimal(amount), currency="EUR"
    )
    return at(event, time)


def failed(order: str, user: str, amount: str, time: datetime) -> CloudEvent:
    event = PaymentFailed(
        payment_id=new_id(),
        order_id=order,
        user_id=user,
        amount=Decimal(amount),
        currency="EUR",
        reason="card_declined",
    )
    return at(event, time)


def h(day: datetime, hours: float) -> datetime:
    return day + timedelta(hours=hours)


def stream() -> list[CloudEvent]:
    """Two days of a small shop: 13 events, one payment delivered before its order."""
    return [
        registered("u1", h(DAY1, 8)),
        registered("u2", h(DAY1, 8.5)),
        registered("u3", h(DAY1, 9)),
        ordered("o1", "u1", [("p1", 2, "10.00"), ("p2", 1, "5.50")], h(DAY1, 10)),
        paid("o1", "u1", "25.50", h(DAY1, 10) + timedelta(milliseconds=1500)),
        ordered("o2", "u2", [("p1", 1, "10.00")], h(DAY1, 11)),
        failed("o2", "u2", "10.00", h(DAY1, 11) + timedelta(milliseconds=200)),
        registered("u4", h(DAY2, 8)),
        paid("o3", "u1", "5.97", h(DAY2, 9) + timedelta(seconds=3)),  # before its order
        ordered("o3", "u1", [("p3", 3, "1.99")], h(DAY2, 9)),
        ordered("o4", "u3", [("p2", 1, "5.50")], h(DAY2, 10)),  # never paid
        ordered("o5", "u5", [("p1", 1, "10.00")], h(DAY2, 11)),  # u5 never registered
        paid("o5", "u5", "10.00", h(DAY2, 11) + timedelta(milliseconds=100)),
    ]


async def counted(store: AnalyticsStore, total: int) -> None:
    async def done() -> bool:
        doc = await store.counters.find_one({"_id": "events"})
        return bool(doc) and doc["total"] == total

    await eventually(done, what=f"{total} events counted")


async def test_report_numbers_follow_the_event_stream(amqp_url: str, store: AnalyticsStore) -> None:
    # given two days of events, each delivered twice
    await send(amqp_url, stream(), times=2)
    await counted(store, 13)
    await stays(lambda: _total_is(store, 13), seconds=1.0)
    # when the report is built
    report = await build_report(store, today=DAY2.date())
    # then every section has the numbers of the stream, each event counted once
    assert report["daily"] == [
        {
            "date": "2026-12-01",
            "events": 7,
            "signups": 3,
            "orders": 2,
            "payments_completed": 1,
            "payments_failed": 1,
            "revenue": {"EUR": "25.50"},
            "payment_success_rate": 0.5,
        },
        {
            "date": "2026-12-02",
            "events": 6,
            "signups": 1,
            "orders": 3,
            "payments_completed": 2,
            "payments_failed": 0,
            "revenue": {"EUR": "15.97"},
            "payment_success_rate": 1.0,
        },
    ]
    assert report["totals"] == {
        "events": 13,
        "signups": 4,
        "orders": 5,
        "payments_completed": 3,
        "payments_failed": 1,
        "revenue": {"EUR": "41.47"},
        "payment_success_rate": 0.75,
    }
    assert report["top_products"] == {
        "by_quantity": [
            {"product_id": "p1", "quantity": 3, "revenue": {"EUR": "30.00"}},
            {"product_id": "p3", "quantity": 3, "revenue": {"EUR": "5.97"}},
            {"product_id": "p2", "quantity": 1, "revenue": {"EUR": "5.50"}},
        ],
        "by_revenue": [
            {"product_id": "p1", "currency": "EUR", "revenue": "30.00", "quantity": 3},
            {"product_id": "p3", "currency": "EUR", "revenue": "5.97", "quantity": 3},
            {"product_id": "p2", "currency": "EUR", "revenue": "5.50", "quantity": 1},
        ],
    }
    # u5 ordered and paid without registering: a user, but not in the funnel
    assert report["funnel"] == {
        "registered": 4,
        "ordered": 3,
        "paid": 1,
        "order_rate": 0.75,
        "payment_rate": 0.3333,
    }
    assert report["users"] == {"registered": 4, "ordered": 4, "paid": 2}
    # latencies 100, 200, 1500, 3000 ms: nearest-rank p50 = 200, p95 = 3000
    assert report["payment_latency_ms"] == {"count": 4, "p50": 200.0, "p95": 3000.0, "max": 3000.0}
    assert report["events"] == {
        "total": 13,
        "unknown": 0,
        "invalid": 0,
        "by_type": {
            "OrderCreated": 5,
            "PaymentCompleted": 3,
            "PaymentFailed": 1,
            "UserRegistered": 4,
        },
        "unknown_types": [],
    }
    assert await store.events.count_documents({}) == 13


async def test_duplicate_deliveries_are_stored_and_counted_once(
    amqp_url: str, store: AnalyticsStore
) -> None:
    # given the same order.created delivered five times, then a different order once
    first = ordered("o1", "u1", [("p1", 1, "10.00")], h(DAY1, 10))
    await send(amqp_url, [first], times=5)
    await send(amqp_url, [ordered("o2", "u1", [("p1", 1, "10.00")], h(DAY1, 12))])
    await counted(store, 2)
    await stays(lambda: _total_is(store, 2), seconds=1.0)
    # then the log holds each event once, and the day two orders
    assert await store.events.count_documents({"_id": first.id}) == 1
    report = await build_report(store, today=DAY1.date())
    assert report["totals"]["orders"] == 2


async def test_rebuild_from_the_log_equals_the_incremental_aggregates(
    amqp_url: str, store: AnalyticsStore
) -> None:
    # given the stream handled live, with concurrent handlers and duplicate deliveries
    await send(amqp_url, stream(), times=2)
    await counted(store, 13)
    live_docs = await store.dump()
    live_report = await build_report(store, today=DAY2.date(), days=3)
    # when the aggregates are damaged and then rebuilt from the event log
    await store.daily.delete_many({})
    await store.products.update_many({}, {"$inc": {"quantity": 100}})
    assert await store.rebuild() == 13
    # then every derived document and the report are exactly what the live path built
    assert await store.dump() == live_docs
    assert await build_report(store, today=DAY2.date(), days=3) == live_report


async def test_unknown_event_types_are_stored_and_counted(
    amqp_url: str, store: AnalyticsStore, analytics: Settings
) -> None:
    # given an event type no one registered, and a known type with broken data
    unknown = CloudEvent(
        id=new_id(),
        source="/inventory",
        type="StockAdjusted",
        time=h(DAY1, 7),
        data={"sku": "p1", "delta": -3, "$weird.key": {"a.b": 1}},
    )
    broken = CloudEvent(
        id=new_id(), source="/orders", type="OrderCreated", time=h(DAY1, 8), data={}
    )
    await publish(amqp_url, unknown, routing_key="inventory.stock.adjusted")
    await publish(amqp_url, broken, routing_key="order.created")
    await send(amqp_url, [registered("u1", h(DAY1, 9))])
    # then all three are in the log and counted, and nothing was parked
    await counted(store, 3)
    assert await store.events.count_documents({}) == 3
    report = await build_report(store, today=DAY1.date())
    assert report["events"] == {
        "total": 3,
        "unknown": 1,
        "invalid": 1,
        "by_type": {"OrderCreated": 1, "StockAdjusted": 1, "UserRegistered": 1},
        "unknown_types": ["StockAdjusted"],
    }
    assert report["totals"]["orders"] == 0
    assert report["totals"]["signups"] == 1
    assert await queue_messages(amqp_url, "analytics.dlq") == []
    stored = await store.events.find_one({"_id": unknown.id})
    assert stored is not None
    assert CloudEvent.model_validate_json(stored["body"]) == unknown


async def test_report_and_rebuild_commands_print_the_stored_numbers(
    amqp_url: str, store: AnalyticsStore, analytics: Settings
) -> None:
    # given the stream handled by the worker
    await send(amqp_url, stream())
    await counted(store, 13)
    env = {
        **os.environ,
        "MONGODB_URL": analytics.mongodb_url,
        "MONGODB_DB_PREFIX": analytics.mongodb_db_prefix,
    }
    # when an operator rebuilds and asks for the JSON report of all days
    code, out = await _run(env, "rebuild")
    assert code == 0, out
    assert "13 stored event(s)" in out
    code, out = await _run(env, "report", "--format", "json", "--top", "2")
    assert code == 0, out
    # then it is the report of the stream
    assert json.loads(out) == await build_report(store, today=DAY2.date(), top=2)
    # and the table for humans shows the same numbers
    code, out = await _run(env, "report")
    assert code == 0, out
    for shown in ("2026-12-01", "EUR 41.47", "75.0%", "3,000.0", "UserRegistered"):
        assert shown in out, out


async def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "analytics",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def _total_is(store: AnalyticsStore, total: int) -> bool:
    doc = await store.counters.find_one({"_id": "events"})
    return bool(doc) and doc["total"] == total


async def test_rebuild_while_events_arrive_loses_and_doubles_nothing(
    amqp_url: str, store: AnalyticsStore
) -> None:
    # given a rebuild running over and over while the worker consumes a stream
    rebuilding = True

    async def rebuild_repeatedly() -> int:
        runs = 0
        while rebuilding:
            await store.rebuild()
            runs += 1
        return runs

    task = asyncio.create_task(rebuild_repeatedly())
    try:
        await send(amqp_url, stream(), times=2)
        await counted(store, 13)
    finally:
        rebuilding = False
        runs = await task
    assert runs >= 1
    # then the live aggregates hold every event exactly once: a final rebuild changes nothing
    live = await store.dump()
    await store.rebuild()
    assert await store.dump() == live
    assert (await build_report(store, today=DAY2.date()))["totals"]["events"] == 13
