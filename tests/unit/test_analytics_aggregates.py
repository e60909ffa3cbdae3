"""What each event contributes to the analytics aggregates (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.aggregates import (
    Fold,
    OrderState,
    Record,
    UserState,
    cents,
    contribute,
    event_time,
    inc,
    order_id_of,
    user_id_of,
)
from events.contracts import (
    CloudEvent,
    Event,
    OrderCreated,
    OrderLine,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
)

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def rec(event: Event, time: datetime, event_id: str | None = None) -> Record:
    envelope = CloudEvent.wrap(event, source="/tests", event_id=event_id)
    return Record.of(envelope.model_copy(update={"time": time}))


def registered(user: str, time: datetime = T0) -> Record:
    return rec(UserRegistered(user_id=user, username=user, email=f"{user}@example.com"), time)


def ordered(order: str, user: str, time: datetime = T0) -> Record:
    lines = (
        OrderLine(product_id="p1", quantity=2, unit_price=Decimal("10.00")),
        OrderLine(product_id="p2", quantity=1, unit_price=Decimal("0.99")),
    )
    return rec(
        OrderCreated(
            order_id=order,
            user_id=user,
            username=user,
            items=lines,
            total=Decimal("20.99"),
            currency="EUR",
        ),
        time,
    )


def paid(order: str, user: str, time: datetime) -> Record:
    return rec(
        PaymentCompleted(
            payment_id="pay", order_id=order, user_id=user, amount=Decimal("20.99"), currency="EUR"
        ),
        time,
    )


def failed(order: str, user: str, time: datetime) -> Record:
    return rec(
        PaymentFailed(
            payment_id="pay",
            order_id=order,
            user_id=user,
            amount=Decimal("20.99"),
            currency="EUR",
            reason="declined",
        ),
        time,
    )


def test_money_is_counted_in_integer_cents() -> None:
    assert cents(Decimal("19.90")) == 1990
    assert cents(Decimal("0.01")) == 1
    assert cents(Decimal("100")) == 10000


def test_event_time_is_utc_at_millisecond_precision() -> None:
    local = datetime(2026, 12, 1, 11, 0, 0, 123456, tzinfo=UTC).astimezone(
        datetime.now().astimezone().tzinfo
    )
    assert event_time(local) == datetime(2026, 12, 1, 11, 0, 0, 123000, tzinfo=UTC)


def test_payment_counts_revenue_on_its_own_day() -> None:
    step = contribute(paid("o1", "u1", T0), None, None)
    assert step.increments[("daily", "2026-12-01")] == {
        "events": 1,
        "payments_completed": 1,
        "revenue.EUR": 2099,
    }


def test_products_are_counted_once_the_order_is_both_known_and_paid() -> None:
    fold = Fold().extend([paid("o1", "u1", T0 + timedelta(seconds=2)), ordered("o1", "u1")])
    assert fold.docs["products"]["p1"] == {"_id": "p1", "quantity": 2, "revenue": {"EUR": 2000}}
    assert fold.docs["products"]["p2"] == {"_id": "p2", "quantity": 1, "revenue": {"EUR": 99}}
    assert fold.orders["o1"].latency_us == 2_000_000


def test_failed_orders_sell_nothing_but_have_a_latency() -> None:
    fold = Fold().extend([ordered("o1", "u1"), failed("o1", "u1", T0 + timedelta(milliseconds=5))])
    assert fold.docs["products"] == {}
    assert fold.orders["o1"].latency_us == 5000
    assert fold.docs["daily"]["2026-12-01"]["payments_failed"] == 1


def test_latency_is_never_negative_when_clocks_disagree() -> None:
    fold = Fold().extend([ordered("o1", "u1"), paid("o1", "u1", T0 - timedelta(seconds=1))])
    assert fold.orders["o1"].latency_us == 0


def test_funnel_counts_a_stage_only_after_every_earlier_stage() -> None:
    fold = Fold().extend(
        [
            ordered("o1", "u1"),  # u1 orders before its registration is seen
            paid("o1", "u1", T0),
            registered("u1"),
            registered("u2"),
            ordered("o2", "u3"),  # u3 never registers
            paid("o2", "u3", T0),
        ]
    )
    assert fold.docs["counters"]["funnel"] == {
        "_id": "funnel",
        "registered": 2,
        "ordered": 1,
        "paid": 1,
    }
    assert fold.docs["counters"]["users"] == {
        "_id": "users",
        "registered": 2,
        "ordered": 2,
        "paid": 2,
    }


def test_unknown_and_invalid_events_are_only_counted() -> None:
    unknown = Record.of(
        CloudEvent(id="x1", source="/x", type="StockAdjusted", time=T0, data={"sku": "p1"})
    )
    broken = Record.of(CloudEvent(id="x2", source="/x", type="OrderCreated", time=T0, data={}))
    assert (unknown.known, unknown.invalid) == (False, False)
    assert (broken.known, broken.invalid) == (True, True)
    fold = Fold().extend([unknown, broken])
    assert fold.docs["counters"]["events"] == {
        "_id": "events",
        "total": 2,
        "unknown": 1,
        "invalid": 1,
    }
    assert fold.docs["types"]["OrderCreated"] == {"_id": "OrderCreated", "count": 1, "invalid": 1}
    assert fold.docs["daily"]["2026-12-01"] == {"_id": "2026-12-01", "events": 2}
    assert "data" not in unknown.log_document(received_at=T0, routing_key=None)


def test_a_record_read_back_from_the_log_is_the_record_that_was_stored() -> None:
    original = ordered("o1", "u1", T0 + timedelta(microseconds=1500))
    doc = original.log_document(received_at=T0, routing_key="order.created")
    assert Record.from_log(doc) == original
    assert doc["data"]["items"][0]["unit_price"] == "10.00"


def test_join_state_survives_its_round_trip_through_documents() -> None:
    fold = Fold().extend([ordered("o1", "u1"), paid("o1", "u1", T0 + timedelta(seconds=1))])
    order = fold.orders["o1"]
    assert OrderState.from_doc(order.to_doc()) == order
    user = fold.users["u1"]
    assert UserState.from_doc(user.to_doc()) == user


def test_in_memory_inc_follows_dotted_paths() -> None:
    doc: dict[str, Any] = {"_id": "d"}
    inc(doc, "revenue.EUR", 5)
    inc(doc, "revenue.EUR", 7)
    inc(doc, "orders", 1)
    assert doc == {"_id": "d", "revenue": {"EUR": 12}, "orders": 1}


def live(records: list[Record]) -> dict[str, Any]:
    """What the consumer does, one event at a time, state read back from its documents."""
    docs: dict[str, dict[str, dict[str, Any]]] = {}
    orders: dict[str, dict[str, Any]] = {}
    users: dict[str, dict[str, Any]] = {}
    for record in records:
        oid, uid = order_id_of(record), user_id_of(record)
        step = contribute(
            record,
            OrderState.from_doc(orders[oid]) if oid in orders else None,
            UserState.from_doc(users[uid]) if uid in users else None,
        )
        for (collection, doc_id), fields in step.increments.items():
            doc = docs.setdefault(collection, {}).setdefault(doc_id, {"_id": doc_id})
            for path, amount in fields.items():
                inc(doc, path, amount)
        if step.order:
            orders[step.order.order_id] = step.order.to_doc()
        if step.user:
            users[step.user.user_id] = step.user.to_doc()
    return {"docs": docs, "orders": orders, "users": users}


def rebuilt(records: list[Record]) -> dict[str, Any]:
    fold = Fold().extend(records)
    return {
        "docs": {name: docs for name, docs in fold.docs.items() if docs},
        "orders": {k: v.to_doc() for k, v in fold.orders.items()},
        "users": {k: v.to_doc() for k, v in fold.users.items()},
    }


def shop_day() -> list[Record]:
    ms = timedelta(milliseconds=1)
    return [
        registered("u1"),
        registered("u2", T0 + 3 * ms),
        ordered("o1", "u1", T0 + 10 * ms),
        paid("o1", "u1", T0 + 900 * ms),
        ordered("o2", "u2", T0 + 20 * ms),
        failed("o2", "u2", T0 + 70 * ms),
        ordered("o3", "u1", T0 + timedelta(days=1)),
        paid("o3", "u1", T0 + timedelta(days=1, seconds=2)),
        ordered("o4", "u9", T0 + timedelta(days=1, hours=1)),
        Record.of(CloudEvent(id="odd", source="/x", type="Odd", time=T0, data={})),
    ]


@settings(max_examples=100, deadline=None)
@given(st.permutations(shop_day()))
def test_any_arrival_order_gives_the_same_aggregates(records: list[Record]) -> None:
    # this is why a rebuild (log order) equals the live path (delivery order)
    assert live(records) == rebuilt(shop_day())
