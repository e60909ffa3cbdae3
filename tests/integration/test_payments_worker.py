"""The payments worker against a real RabbitMQ and a real Mongo-wire server: order.created in,
one charge and one payment.completed / payment.failed out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from events.contracts import OrderCreated, OrderLine
from events.runtime import Runtime
from payments.bootstrap import bootstrap
from payments.config import Settings
from payments.provider import ChargeRequest, SimulatedProvider
from payments.store import PaymentsStore
from tests.support.helpers import publish_event, queue_messages
from tests.support.poll import eventually, stays
from tests.support.service import running_worker
from tests.support.tap import EventTap


def order(method: str = "card_ok", *, order_id: str | None = None) -> OrderCreated:
    return OrderCreated(
        order_id=order_id or f"o-{uuid.uuid4().hex[:8]}",
        user_id="u1",
        username="alice",
        items=(
            OrderLine(product_id="p1", quantity=2, unit_price=Decimal("9.95")),
            OrderLine(product_id="p2", quantity=1, unit_price=Decimal("0.10")),
        ),
        total=Decimal("20.00"),
        currency="EUR",
        payment_method=method,
    )


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(Settings)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Runtime]:
    async with running_worker(settings, bootstrap) as runtime:
        yield runtime


@pytest.fixture
def store(worker: Runtime, settings: Settings) -> PaymentsStore:
    return PaymentsStore(worker.mongo, settings.database_name, source="/payments")


async def exactly(tap: EventTap, type_: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait for ``count`` events of ``type_``, then make sure no more follow."""
    found = await tap.wait_for(type_, count)

    async def still() -> bool:
        return len(tap.events(type_)) == count

    await stays(still, seconds=1.0)
    return found


async def test_order_created_is_charged_once_and_payment_completed_published(
    worker: Runtime, store: PaymentsStore, amqp_url: str, tap: EventTap
) -> None:
    # given an order paid with a good card
    created = order("card_ok")
    # when order.created arrives
    envelope = await publish_event(amqp_url, created, correlationid="corr-42")
    # then exactly one payment.completed is published for its total
    [completed] = await exactly(tap, "PaymentCompleted")
    assert completed["source"] == "/payments"
    assert completed["correlationid"] == "corr-42"
    data = completed["data"]
    assert data["order_id"] == created.order_id
    assert data["user_id"] == "u1"
    assert data["amount"] == "20.00"
    assert data["currency"] == "EUR"
    # and one completed payment with its transaction and attempt is stored
    payment = await store.payment_for(created.order_id)
    assert payment is not None
    assert payment.status == "completed"
    assert payment.payment_id == data["payment_id"]
    assert payment.amount == Decimal("20.00")
    assert payment.transaction_id
    [attempt] = await store.attempts_for(created.order_id)
    assert attempt.outcome == "succeeded"
    assert attempt.event_id == envelope.id
    assert attempt.transaction_id == payment.transaction_id
    assert tap.events("PaymentFailed") == []


async def test_declined_card_publishes_payment_failed_with_reason(
    worker: Runtime, store: PaymentsStore, amqp_url: str, tap: EventTap
) -> None:
    created = order("card_declined")
    await publish_event(amqp_url, created)
    [failed] = await exactly(tap, "PaymentFailed")
    assert failed["data"]["order_id"] == created.order_id
    assert failed["data"]["amount"] == "20.00"
    assert "declined" in failed["data"]["reason"]
    payment = await store.payment_for(created.order_id)
    assert payment is not None
    assert payment.status == "failed"
    assert payment.transaction_id is None
    assert [a.outcome for a in await store.attempts_for(created.order_id)] == ["declined"]
    assert tap.events("PaymentCompleted") == []


async def test_unknown_payment_method_is_declined_not_retried(
    worker: Runtime, store: PaymentsStore, amqp_url: str, tap: EventTap
) -> None:
    created = order("bitcoin")
    await publish_event(amqp_url, created)
    [failed] = await exactly(tap, "PaymentFailed")
    assert "unsupported payment method" in failed["data"]["reason"]
    assert len(await store.attempts_for(created.order_id)) == 1


async def test_flaky_card_is_retried_then_completed_once(
    worker: Runtime, store: PaymentsStore, amqp_url: str, tap: EventTap
) -> None:
    # given a card whose provider times out twice
    created = order("card_flaky")
    # when order.created arrives
    await publish_event(amqp_url, created)
    # then after the bus's retries exactly one payment completes
    [completed] = await exactly(tap, "PaymentCompleted")
    assert completed["data"]["order_id"] == created.order_id
    assert tap.events("PaymentFailed") == []
    attempts = await store.attempts_for(created.order_id)
    assert [a.outcome for a in attempts] == ["error", "error", "succeeded"]
    assert [a.delivery_attempt for a in attempts] == [1, 2, 3]
    assert attempts[0].error is not None
    assert "ProviderUnavailable" in attempts[0].error
    assert await store.payments.count_documents({"order_id": created.order_id}) == 1


async def test_duplicate_order_created_charges_once(
    worker: Runtime, store: PaymentsStore, amqp_url: str, tap: EventTap
) -> None:
    # given the same order.created delivered twice (possibly handled concurrently)
    created = order("card_ok")
    await publish_event(amqp_url, created, times=2)
    # then one payment, one provider transaction and one event
    await exactly(tap, "PaymentCompleted")
    assert await store.payments.count_documents({"order_id": created.order_id}) == 1
    ledger = await store.db["simulated_provider"].find_one({"_id": created.order_id})
    assert ledger is not None
    payment = await store.payment_for(created.order_id)
    assert payment is not None
    assert ledger["result"]["transaction_id"] == payment.transaction_id


async def test_order_created_redelivered_after_payment_charges_nothing(
    worker: Runtime, store: PaymentsStore, amqp_url: str, tap: EventTap
) -> None:
    # given an order that has been paid
    created = order("card_ok")
    envelope = await publish_event(amqp_url, created)
    await tap.wait_for("PaymentCompleted")
    # when the same event comes again later (an ack lost after the commit), and the same
    # order arrives once more under a new event id
    await publish_event(amqp_url, created, event_id=envelope.id)
    await publish_event(amqp_url, created)
    # then nothing more is charged or published
    await exactly(tap, "PaymentCompleted")
    ledger = await store.db["simulated_provider"].find_one({"_id": created.order_id})
    assert ledger is not None
    assert ledger["requests"] == 1
    assert len(await store.attempts_for(created.order_id)) == 1


async def test_redelivery_after_crash_between_charge_and_commit_reuses_the_charge(
    worker: Runtime, store: PaymentsStore, amqp_url: str, tap: EventTap
) -> None:
    # given a delivery that charged the card and died before committing
    created = order("card_ok")
    provider = SimulatedProvider(store.db["simulated_provider"])
    first = await provider.charge(
        ChargeRequest(
            idempotency_key=created.order_id,
            amount=created.total,
            currency=created.currency,
            method=created.payment_method,
        )
    )
    assert await store.payment_for(created.order_id) is None
    # when the event is redelivered
    await publish_event(amqp_url, created)
    # then the payment records that same transaction: the customer was charged once
    await exactly(tap, "PaymentCompleted")
    payment = await store.payment_for(created.order_id)
    assert payment is not None
    assert payment.transaction_id == first.transaction_id


async def test_transient_failures_beyond_the_retry_budget_park_the_event(
    make_settings: Callable[..., Settings], amqp_url: str, tap: EventTap
) -> None:
    # given a worker allowed only two attempts, and a card that fails twice
    settings = make_settings(Settings, retry_delays=(0.2,))
    created = order("card_flaky")
    async with running_worker(settings, bootstrap) as runtime:
        store = PaymentsStore(runtime.mongo, settings.database_name, source="/payments")
        await publish_event(amqp_url, created)
        # then the event is parked for an operator, never turned into a payment.failed
        parked = await eventually(
            lambda: queue_messages(amqp_url, "payments.dlq"), what="a parked message"
        )
        assert parked[0].headers["x-error-type"] == "ProviderUnavailable"
        assert [a.outcome for a in await store.attempts_for(created.order_id)] == [
            "error",
            "error",
        ]
        assert await store.payment_for(created.order_id) is None
        assert tap.events("PaymentFailed") == []
        assert tap.events("PaymentCompleted") == []
