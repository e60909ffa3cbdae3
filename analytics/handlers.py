"""What analytics does with each event: every envelope on ``shop.events``, known type or
not, goes into the event log once and into the aggregates once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from analytics.store import AnalyticsStore
from events.bus import Handler, current_delivery
from events.contracts import CloudEvent, Event

log = logging.getLogger("analytics.handlers")


@dataclass(frozen=True)
class Context:
    store: AnalyticsStore


async def on_any_event(envelope: CloudEvent, ctx: Context) -> None:
    delivery = current_delivery()
    stored = await ctx.store.record(
        envelope, routing_key=delivery.routing_key if delivery else None
    )
    if not stored:
        log.info("event %s is in the log already; counted once", envelope.id)


#: The key CloudEvent binds ``#`` and hands over the raw envelope of every type.
SUBSCRIPTIONS: Mapping[type[Event] | type[CloudEvent], Handler] = {CloudEvent: on_any_event}
