"""Event contracts: the one place where eventshop's domain events are defined.

Every service imports these classes; none keeps its own copy. Events are frozen pydantic
models named in the past tense. On the wire each travels as a CloudEvents 1.0 event in
structured JSON mode (:class:`CloudEvent`), with the model's fields under ``data``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

#: Money travels as a decimal string ("19.90"), never a float.
Money = Annotated[
    Decimal,
    Field(
        max_digits=14,
        decimal_places=2,
        allow_inf_nan=False,
        # The exported JSON Schema says what the wire carries: a decimal string.
        json_schema_extra={"pattern": r"^-?\d{1,12}(\.\d{1,2})?$", "examples": ["19.90"]},
    ),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="always"),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

EXCHANGE = "shop.events"
CONTENT_TYPE = "application/cloudevents+json"


class Event(BaseModel):
    """Base of every domain event: frozen, extra fields ignored (adding an optional field
    is a compatible change), ``ROUTING_KEY`` names where it is published."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    ROUTING_KEY: ClassVar[str]

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


class UserRegistered(Event):
    ROUTING_KEY: ClassVar[str] = "user.registered"
    user_id: str
    username: str
    email: str


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    product_id: str
    quantity: int = Field(ge=1)
    unit_price: Money


class OrderCreated(Event):
    ROUTING_KEY: ClassVar[str] = "order.created"
    order_id: str
    user_id: str
    username: str
    items: tuple[OrderLine, ...] = Field(min_length=1)
    total: Money
    currency: Currency
    payment_method: str = "card_ok"


class PaymentCompleted(Event):
    ROUTING_KEY: ClassVar[str] = "payment.completed"
    payment_id: str
    order_id: str
    user_id: str
    amount: Money
    currency: Currency


class PaymentFailed(Event):
    ROUTING_KEY: ClassVar[str] = "payment.failed"
    payment_id: str
    order_id: str
    user_id: str
    amount: Money
    currency: Currency
    reason: str


#: type name -> event class; the only registry of event types.
REGISTRY: dict[str, type[Event]] = {
    cls.type_name(): cls for cls in (UserRegistered, OrderCreated, PaymentCompleted, PaymentFailed)
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope in structured JSON mode."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: AwareDatetime
    datacontenttype: str = "application/json"
    correlationid: str | None = None
    #: W3C trace context (CloudEvents distributed-tracing extension).
    traceparent: str | None = None
    data: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        source: str,
        correlationid: str | None = None,
        event_id: str | None = None,
        traceparent: str | None = None,
    ) -> CloudEvent:
        return cls(
            id=event_id or new_id(),
            source=source,
            type=event.type_name(),
            time=utcnow(),
            correlationid=correlationid,
            traceparent=traceparent,
            data=event.model_dump(mode="json"),
        )

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    def event(self) -> Event:
        """The typed domain event inside; raises :class:`UnknownEventType` or
        :class:`pydantic.ValidationError` when the envelope does not hold one."""
        cls = REGISTRY.get(self.type)
        if cls is None:
            raise UnknownEventType(self.type)
        return cls.model_validate(self.data)


class UnknownEventType(LookupError):
    """An envelope whose ``type`` is not in :data:`REGISTRY`."""


def parse(body: bytes) -> CloudEvent:
    """Parse a structured-mode CloudEvent; raises ``ValidationError`` on anything else."""
    return CloudEvent.model_validate_json(body)


__all__ = [
    "CONTENT_TYPE",
    "EXCHANGE",
    "REGISTRY",
    "CloudEvent",
    "Event",
    "Money",
    "OrderCreated",
    "OrderLine",
    "PaymentCompleted",
    "PaymentFailed",
    "UnknownEventType",
    "UserRegistered",
    "ValidationError",
    "new_id",
    "parse",
    "utcnow",
]
