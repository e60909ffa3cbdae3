"""What each event contributes to the reports, as pure functions.

Both the live consumer and ``python -m analytics rebuild`` go through :func:`contribute`;
the consumer turns its :class:`Step` into ``$inc`` updates, the rebuild folds the steps of
the whole event log in memory (:class:`Fold`). Same function, same numbers.

Every contribution is commutative: the result does not depend on the order events arrive
in (a payment may be delivered before its order), which is what lets a rebuild from the
log, in any order, equal the incremental path.

Aggregates (documents, all numbers integers; money in cents of its currency):

* ``daily/<YYYY-MM-DD>``: ``events``, ``signups``, ``orders``, ``payments_completed``,
  ``payments_failed``, ``revenue.<CUR>`` — by the event's own ``time`` (UTC day).
* ``products/<product_id>``: ``quantity``, ``revenue.<CUR>`` of paid orders.
* ``counters/funnel``: users who registered, of those who ordered, of those who paid.
* ``counters/users``: distinct users seen registering, ordering, paying (in any order).
* ``counters/events``: ``total``, ``unknown`` (type not in the registry), ``invalid``
  (known type whose data does not validate).
* ``types/<type>``: ``count`` and ``invalid`` per event type.

State that joins events (``orders``, ``users``) is replaced as a whole per step; an order's
payment latency lives on its order document.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from events.contracts import (
    REGISTRY,
    CloudEvent,
    Event,
    OrderCreated,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
)

DAILY, PRODUCTS, COUNTERS, TYPES = "daily", "products", "counters", "types"
AGGREGATES = (DAILY, PRODUCTS, COUNTERS, TYPES)
#: Funnel stages, in order; a user counts in a stage once every earlier stage holds too.
STAGES = ("registered", "ordered", "paid")

#: (collection, document id) -> {dotted field: amount to add}
Increments = dict[tuple[str, str], dict[str, int]]


def cents(amount: Decimal) -> int:
    """Money as integer cents (contract money has at most two decimal places)."""
    return int((amount * 100).to_integral_value())


def event_time(value: datetime) -> datetime:
    """An event time as stored: UTC, truncated to the millisecond precision of BSON dates,
    so the live path and a rebuild from stored documents compute the same latencies."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Record:
    """One event as analytics sees it: the envelope, its time, and the typed event when the
    type is known and its data valid."""

    id: str
    type: str
    time: datetime
    body: str
    event: Event | None
    known: bool

    @property
    def day(self) -> str:
        return self.time.date().isoformat()

    @property
    def invalid(self) -> bool:
        return self.known and self.event is None

    @classmethod
    def of(cls, envelope: CloudEvent) -> Record:
        known = envelope.type in REGISTRY
        event: Event | None = None
        if known:
            try:
                event = envelope.event()
            except ValidationError:
                event = None
        return cls(
            id=envelope.id,
            type=envelope.type,
            time=event_time(envelope.time),
            body=envelope.model_dump_json(exclude_none=True),
            event=event,
            known=known,
        )

    @classmethod
    def from_log(cls, doc: Mapping[str, Any]) -> Record:
        return cls.of(CloudEvent.model_validate_json(doc["body"]))

    def log_document(self, *, received_at: datetime, routing_key: str | None) -> dict[str, Any]:
        """The append-only log entry, keyed by event id. ``body`` is the whole envelope
        (what a rebuild reads); ``data`` is kept as a document for queries when valid."""
        doc: dict[str, Any] = {
            "_id": self.id,
            "type": self.type,
            "time": self.time,
            "body": self.body,
            "known": self.known,
            "received_at": received_at,
        }
        if routing_key:
            doc["routing_key"] = routing_key
        if self.event is not None:
            doc["data"] = json.loads(self.body)["data"]
        return doc


@dataclass(frozen=True)
class Line:
    product_id: str
    quantity: int
    cents: int


@dataclass(frozen=True)
class OrderState:
    """What analytics has seen of one order so far."""

    order_id: str
    user_id: str | None = None
    created_at: datetime | None = None
    currency: str | None = None
    lines: tuple[Line, ...] = ()
    paid: bool = False
    result_at: datetime | None = None
    #: microseconds from ``order.created`` to the first payment result
    latency_us: int | None = None
    #: its lines were counted into the product totals (once, when created and paid)
    sold: bool = False

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_id": self.order_id,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "currency": self.currency,
            "lines": [
                {"product_id": ln.product_id, "quantity": ln.quantity, "cents": ln.cents}
                for ln in self.lines
            ],
            "paid": self.paid,
            "result_at": self.result_at,
            "sold": self.sold,
        }
        if self.latency_us is not None:  # absent, not null: the percentile index skips it
            doc["latency_us"] = self.latency_us
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OrderState:
        return cls(
            order_id=doc["_id"],
            user_id=doc.get("user_id"),
            created_at=_utc(doc.get("created_at")),
            currency=doc.get("currency"),
            lines=tuple(
                Line(ln["product_id"], ln["quantity"], ln["cents"]) for ln in doc.get("lines", [])
            ),
            paid=bool(doc.get("paid")),
            result_at=_utc(doc.get("result_at")),
            latency_us=doc.get("latency_us"),
            sold=bool(doc.get("sold")),
        )


@dataclass(frozen=True)
class UserState:
    user_id: str
    registered: bool = False
    ordered: bool = False
    paid: bool = False

    def stages(self) -> tuple[bool, ...]:
        return (self.registered, self.ordered, self.paid)

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.user_id,
            "registered": self.registered,
            "ordered": self.ordered,
            "paid": self.paid,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> UserState:
        return cls(
            doc["_id"], bool(doc.get("registered")), bool(doc.get("ordered")), bool(doc.get("paid"))
        )


@dataclass
class Step:
    """The effect of one event: aggregate increments and the new join state."""

    increments: Increments = field(default_factory=lambda: defaultdict(dict))
    order: OrderState | None = None
    user: UserState | None = None

    def add(self, collection: str, doc_id: str, path: str, amount: int) -> None:
        fields = self.increments[(collection, doc_id)]
        fields[path] = fields.get(path, 0) + amount


def order_id_of(record: Record) -> str | None:
    event = record.event
    if isinstance(event, OrderCreated | PaymentCompleted | PaymentFailed):
        return event.order_id
    return None


def user_id_of(record: Record) -> str | None:
    event = record.event
    if isinstance(event, UserRegistered | OrderCreated | PaymentCompleted):
        return event.user_id
    return None


def contribute(record: Record, order: OrderState | None, user: UserState | None) -> Step:
    """What ``record`` adds, given the current state of its order and user (None when the
    event has none, or the state does not exist yet)."""
    step = Step()
    step.add(COUNTERS, "events", "total", 1)
    step.add(TYPES, record.type, "count", 1)
    step.add(DAILY, record.day, "events", 1)
    if not record.known:
        step.add(COUNTERS, "events", "unknown", 1)
        return step
    if record.invalid:
        step.add(COUNTERS, "events", "invalid", 1)
        step.add(TYPES, record.type, "invalid", 1)
        return step

    event = record.event
    if isinstance(event, UserRegistered):
        step.add(DAILY, record.day, "signups", 1)
        _advance(step, user or UserState(event.user_id), "registered")
    elif isinstance(event, OrderCreated):
        step.add(DAILY, record.day, "orders", 1)
        state = replace(
            order or OrderState(event.order_id),
            user_id=event.user_id,
            created_at=record.time,
            currency=event.currency,
            lines=tuple(
                Line(ln.product_id, ln.quantity, ln.quantity * cents(ln.unit_price))
                for ln in event.items
            ),
        )
        _settle(step, state)
        _advance(step, user or UserState(event.user_id), "ordered")
    elif isinstance(event, PaymentCompleted):
        step.add(DAILY, record.day, "payments_completed", 1)
        step.add(DAILY, record.day, f"revenue.{event.currency}", cents(event.amount))
        state = order or OrderState(event.order_id)
        _settle(step, replace(state, paid=True, result_at=_earliest(state.result_at, record.time)))
        _advance(step, user or UserState(event.user_id), "paid")
    elif isinstance(event, PaymentFailed):
        step.add(DAILY, record.day, "payments_failed", 1)
        state = order or OrderState(event.order_id)
        _settle(step, replace(state, result_at=_earliest(state.result_at, record.time)))
    return step


def _settle(step: Step, order: OrderState) -> None:
    """Derive what the joined halves of an order give: its latency once both times are
    known, and its product totals once it is both known and paid (counted once)."""
    if order.created_at is not None and order.result_at is not None:
        order = replace(order, latency_us=_micros(order.result_at - order.created_at))
    if order.paid and order.lines and not order.sold:
        for line in order.lines:
            step.add(PRODUCTS, line.product_id, "quantity", line.quantity)
            step.add(PRODUCTS, line.product_id, f"revenue.{order.currency}", line.cents)
        order = replace(order, sold=True)
    step.order = order


def _advance(step: Step, user: UserState, stage: str) -> None:
    before = user.stages()
    after_user = UserState(
        user.user_id,
        registered=user.registered or stage == "registered",
        ordered=user.ordered or stage == "ordered",
        paid=user.paid or stage == "paid",
    )
    after = after_user.stages()
    if before[STAGES.index(stage)] is False:
        step.add(COUNTERS, "users", stage, 1)
    for depth, name in enumerate(STAGES, start=1):
        if all(after[:depth]) and not all(before[:depth]):
            step.add(COUNTERS, "funnel", name, 1)
    step.user = after_user


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def _micros(delta: timedelta) -> int:
    # Clocks of different services may disagree by a little; a result "before" its order
    # counts as instantaneous rather than as a negative latency.
    return max(0, delta // timedelta(microseconds=1))


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Fold:
    """Every aggregate and join state, built in memory from a sequence of records (the
    rebuild). Documents come out exactly as the incremental ``$inc``s would leave them."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in AGGREGATES}
        self.orders: dict[str, OrderState] = {}
        self.users: dict[str, UserState] = {}

    def add(self, record: Record) -> None:
        order_id, user_id = order_id_of(record), user_id_of(record)
        step = contribute(
            record,
            self.orders.get(order_id) if order_id else None,
            self.users.get(user_id) if user_id else None,
        )
        for (collection, doc_id), fields in step.increments.items():
            doc = self.docs[collection].setdefault(doc_id, {"_id": doc_id})
            for path, amount in fields.items():
                inc(doc, path, amount)
        if step.order is not None:
            self.orders[step.order.order_id] = step.order
        if step.user is not None:
            self.users[step.user.user_id] = step.user

    def extend(self, records: Iterable[Record]) -> Fold:
        for record in records:
            self.add(record)
        return self

    def documents(self, collection: str) -> Iterator[dict[str, Any]]:
        yield from self.docs[collection].values()


def inc(doc: dict[str, Any], path: str, amount: int) -> None:
    """``$inc`` in memory: add ``amount`` at a dotted path, creating what is missing."""
    *parents, leaf = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[leaf] = doc.get(leaf, 0) + amount
