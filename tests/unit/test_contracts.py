"""Event contracts: exactly the contract's fields, money as strings, frozen, one registry."""

from __future__ import annotations

import json
from decimal import Decimal

import pydantic
import pytest

from events.contracts import (
    REGISTRY,
    CloudEvent,
    OrderCreated,
    OrderLine,
    PaymentFailed,
    UnknownEventType,
    UserRegistered,
    parse,
)


def order() -> OrderCreated:
    return OrderCreated(
        order_id="o1",
        user_id="u1",
        username="alice",
        items=(OrderLine(product_id="p1", quantity=2, unit_price=Decimal("9.95")),),
        total=Decimal("19.90"),
        currency="EUR",
        payment_method="card_ok",
    )


def test_registry_maps_each_contract_type_to_its_routing_key() -> None:
    assert {name: cls.ROUTING_KEY for name, cls in REGISTRY.items()} == {
        "UserRegistered": "user.registered",
        "OrderCreated": "order.created",
        "PaymentCompleted": "payment.completed",
        "PaymentFailed": "payment.failed",
    }


def test_money_travels_as_decimal_string_never_float() -> None:
    data = json.loads(CloudEvent.wrap(order(), source="/orders").to_json())["data"]
    assert data["total"] == "19.90"
    assert data["items"] == [{"product_id": "p1", "quantity": 2, "unit_price": "9.95"}]


def test_envelope_is_cloudevents_structured_json() -> None:
    envelope = CloudEvent.wrap(order(), source="/orders", correlationid="c-1")
    body = json.loads(envelope.to_json())
    assert body["specversion"] == "1.0"
    assert body["type"] == "OrderCreated"
    assert body["source"] == "/orders"
    assert body["datacontenttype"] == "application/json"
    assert body["correlationid"] == "c-1"
    assert body["time"].endswith("Z") or body["time"].endswith("+00:00")
    assert set(body["data"]) == {
        "order_id",
        "user_id",
        "username",
        "items",
        "total",
        "currency",
        "payment_method",
    }


def test_round_trip_gives_back_an_equal_event() -> None:
    envelope = CloudEvent.wrap(order(), source="/orders")
    assert parse(envelope.to_json()).event() == order()


def test_events_are_frozen() -> None:
    event = UserRegistered(user_id="u", username="n", email="e@example.com")
    with pytest.raises(pydantic.ValidationError):
        event.username = "other"  # type: ignore[misc]


def test_added_optional_field_is_compatible() -> None:
    envelope = CloudEvent.wrap(
        UserRegistered(user_id="u", username="n", email="e@example.com"), source="/users"
    )
    body = json.loads(envelope.to_json())
    body["data"]["locale"] = "de"
    assert parse(json.dumps(body).encode()).event() == UserRegistered(
        user_id="u", username="n", email="e@example.com"
    )


def test_unknown_type_is_reported_not_guessed() -> None:
    envelope = CloudEvent.wrap(
        UserRegistered(user_id="u", username="n", email="e@example.com"), source="/users"
    ).model_copy(update={"type": "UserDeleted"})
    with pytest.raises(UnknownEventType):
        envelope.event()


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"specversion": "1.0"}', b'{"specversion": "0.3", "id": "x"}'],
)
def test_malformed_bodies_are_rejected(body: bytes) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse(body)


def test_float_money_with_many_decimals_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        PaymentFailed(
            payment_id="p", order_id="o", user_id="u", amount="1.234", currency="EUR", reason="x"
        )
