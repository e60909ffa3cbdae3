"""Who publishes and who consumes what: the system's RabbitMQ topology as one table.

This is documentation made executable — the AsyncAPI document (``python -m events
schemas``) and the operator tools (``python -m events dlq``) read it. It does not wire
anything: each service still declares its own ``SUBSCRIPTIONS`` and the bus derives the
bindings from those; a unit test keeps the two in step with each other and with the
contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.bus import dlq_name, queue_arguments, retry_queue_name
from events.contracts import (
    EXCHANGE,
    REGISTRY,
    Event,
    OrderCreated,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
)
from events.settings import ServiceSettings

#: The routing key a catch-all consumer binds with (``analytics``: every event).
EVERY_EVENT = "#"

#: Retry delays a service runs with unless ``RETRY_DELAYS`` says otherwise (seconds).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = ServiceSettings.model_fields["retry_delays"].default

#: The queue ``recommender`` answers request/reply calls on.
RECOMMENDER_RPC = "recommender.rpc"


@dataclass(frozen=True)
class ServiceTopology:
    """One service's place on the bus.

    ``consumes`` are the routing keys its quorum queue ``<name>`` is bound with (empty: it
    has no queue); ``publishes`` the routing keys of the events it records in its outbox;
    ``serves_rpc``/``calls_rpc`` the request/reply queues it answers on or calls.
    """

    name: str
    consumes: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    serves_rpc: tuple[str, ...] = ()
    calls_rpc: tuple[str, ...] = ()

    @property
    def queue(self) -> str | None:
        return self.name if self.consumes else None

    @property
    def dlq(self) -> str | None:
        return dlq_name(self.name) if self.consumes else None

    def retry_queues(self, delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS) -> list[str]:
        return [retry_queue_name(self.name, d) for d in delays] if self.consumes else []

    def queue_arguments(self) -> dict[str, object]:
        return dict(queue_arguments(self.name))


def _keys(*events: type[Event]) -> tuple[str, ...]:
    return tuple(e.ROUTING_KEY for e in events)


SERVICES: tuple[ServiceTopology, ...] = (
    ServiceTopology("users", publishes=_keys(UserRegistered)),
    ServiceTopology(
        "orders",
        consumes=_keys(PaymentCompleted, PaymentFailed),
        publishes=_keys(OrderCreated),
        calls_rpc=(RECOMMENDER_RPC,),
    ),
    ServiceTopology(
        "payments",
        consumes=_keys(OrderCreated),
        publishes=_keys(PaymentCompleted, PaymentFailed),
    ),
    ServiceTopology(
        "notifier",
        consumes=_keys(UserRegistered, OrderCreated, PaymentCompleted, PaymentFailed),
    ),
    ServiceTopology("analytics", consumes=(EVERY_EVENT,)),
    ServiceTopology(
        "recommender",
        consumes=_keys(OrderCreated, PaymentCompleted),
        serves_rpc=(RECOMMENDER_RPC,),
    ),
)

BY_NAME: dict[str, ServiceTopology] = {s.name: s for s in SERVICES}

#: routing key -> event class, for every event type in the registry.
EVENTS_BY_ROUTING_KEY: dict[str, type[Event]] = {
    cls.ROUTING_KEY: cls for cls in sorted(REGISTRY.values(), key=lambda c: c.ROUTING_KEY)
}


def consumers() -> list[ServiceTopology]:
    """Services that own a queue (and so a DLQ), in table order."""
    return [s for s in SERVICES if s.consumes]


def events_consumed_by(service: ServiceTopology) -> list[type[Event]]:
    """The event classes that reach ``service``'s queue (every one for ``#``)."""
    if EVERY_EVENT in service.consumes:
        return list(EVENTS_BY_ROUTING_KEY.values())
    return [EVENTS_BY_ROUTING_KEY[key] for key in service.consumes]


__all__ = [
    "BY_NAME",
    "DEFAULT_RETRY_DELAYS",
    "EVENTS_BY_ROUTING_KEY",
    "EVERY_EVENT",
    "EXCHANGE",
    "RECOMMENDER_RPC",
    "SERVICES",
    "ServiceTopology",
    "consumers",
    "events_consumed_by",
]
