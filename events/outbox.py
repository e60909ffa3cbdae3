"""The transactional outbox: events are written to an ``outbox`` collection in the same
transaction as the state change, and a relay publishes them with publisher confirms.

Safe with several replicas: the relay claims a batch with a lease (an owner token and an
expiry) before publishing, so in the normal case no event is published twice; a relay that
dies holding a lease only delays its batch until the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from events import logs as elog
from events.contracts import CloudEvent, Event, utcnow
from events.metrics import METRICS
from events.tracing import current_traceparent, publish_span

if TYPE_CHECKING:
    from events.bus import Broker

log = logging.getLogger("events.outbox")

PENDING, SENT = "pending", "sent"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Outbox:
    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        *,
        source: str,
        batch_size: int = 200,
        lease_seconds: float = 30.0,
    ) -> None:
        self.collection = collection
        self.source = source
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self._wake = asyncio.Event()

    async def setup(self) -> None:
        await self.collection.create_index(
            [("status", ASCENDING), ("lease_until", ASCENDING), ("created_at", ASCENDING)]
        )

    async def record(
        self, session: AsyncClientSession, event: Event, *, event_id: str | None = None
    ) -> str:
        """Write ``event`` inside the caller's transaction. The correlation id of the
        request or message being handled travels with it."""
        envelope = CloudEvent.wrap(
            event,
            source=self.source,
            correlationid=elog.correlation_id(),
            event_id=event_id,
            traceparent=current_traceparent(),
        )
        await self.collection.insert_one(
            {
                "_id": envelope.id,
                "type": envelope.type,
                "routing_key": event.ROUTING_KEY,
                "body": envelope.to_json().decode(),
                "status": PENDING,
                "created_at": envelope.time,
                "lease_until": _EPOCH,
            },
            session=session,
        )
        return envelope.id

    def notify(self) -> None:
        """Wake the relay: something was committed."""
        self._wake.set()

    async def publish_pending(self, broker: Broker) -> int:
        """Claim one batch of pending events, publish it with confirms, mark what the broker
        confirmed as sent. Returns how many were published."""
        now = utcnow()
        found = [
            doc
            async for doc in self.collection.find(
                {"status": PENDING, "lease_until": {"$lte": now}},
                {"_id": 1, "body": 1, "routing_key": 1, "created_at": 1},
            )
            .sort("created_at", ASCENDING)
            .limit(self.batch_size)
        ]
        if not found:
            return 0
        token = uuid.uuid4().hex
        claim = await self.collection.update_many(
            {
                "_id": {"$in": [doc["_id"] for doc in found]},
                "status": PENDING,
                "lease_until": {"$lte": now},
            },
            {"$set": {"lease_until": now + self.lease, "lease_owner": token}},
        )
        if claim.modified_count == len(found):
            claimed = found  # all ours: the bodies read above are the ones we hold the lease on
        else:
            # Another relay took some of them in between: publish only what we hold.
            claimed = [
                doc async for doc in self.collection.find({"lease_owner": token, "status": PENDING})
            ]
        if not claimed:
            return 0
        envelopes = [
            (CloudEvent.model_validate_json(doc["body"]), doc["routing_key"]) for doc in claimed
        ]
        spans = [publish_span(env, key) for env, key in envelopes]
        errors = await broker.publish_many(envelopes)
        for span, err in zip(spans, errors, strict=True):
            if err is not None:
                span.record_exception(err)
            span.end()
        sent = [doc["_id"] for doc, err in zip(claimed, errors, strict=True) if err is None]
        failed = [doc["_id"] for doc, err in zip(claimed, errors, strict=True) if err is not None]
        done = utcnow()
        if sent:
            await self.collection.update_many(
                {"_id": {"$in": sent}, "lease_owner": token},
                {"$set": {"status": SENT, "sent_at": done}, "$unset": {"lease_owner": ""}},
            )
            METRICS.published.labels(self.source).inc(len(sent))
            for doc in claimed:
                if doc["_id"] in sent:
                    METRICS.outbox_lag.labels(self.source).observe(
                        (done - _aware(doc["created_at"])).total_seconds()
                    )
        if failed:
            # Give them back at once; the relay backs off before its next try.
            await self.collection.update_many(
                {"_id": {"$in": failed}, "lease_owner": token},
                {"$set": {"lease_until": _EPOCH}, "$unset": {"lease_owner": ""}},
            )
            first = next(err for err in errors if err is not None)
            raise PublishFailed(f"{len(failed)} of {len(claimed)} events not confirmed: {first!r}")
        return len(sent)

    async def pending_count(self) -> int:
        return await self.collection.count_documents({"status": PENDING})

    async def status(self) -> dict[str, Any]:
        pending = await self.pending_count()
        oldest = await self.collection.find_one(
            {"status": PENDING}, sort=[("created_at", ASCENDING)]
        )
        age = (utcnow() - _aware(oldest["created_at"])).total_seconds() if oldest else 0.0
        return {"pending": pending, "oldest_pending_seconds": round(age, 3)}

    async def run_relay(self, broker: Broker, *, poll_seconds: float = 1.0) -> None:
        """Publish until cancelled: at once after a commit, every ``poll_seconds`` as a
        safety net (events of a crashed process, another replica's expired lease)."""
        backoff = poll_seconds
        counted_at = float("-inf")
        while True:
            self._wake.clear()
            try:
                # A short batch means nothing was left; a commit since then has set the
                # wake flag again, so the next turn of the outer loop comes at once.
                while await self.publish_pending(broker) >= self.batch_size:
                    pass
                backoff = poll_seconds
                if time.monotonic() - counted_at >= poll_seconds:
                    # The backlog gauge costs a count; once per poll period is enough.
                    METRICS.outbox_backlog.labels(self.source).set(await self.pending_count())
                    counted_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except (PublishFailed, PyMongoError, OSError, RuntimeError) as exc:
                if _cancelling():
                    # A driver turned our cancellation into its own error; stop anyway.
                    raise asyncio.CancelledError from exc
                log.warning("outbox relay could not publish (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as
            # the event is set (a commit just before shutdown), and the relay, and with it
            # Runtime.stop(), would then run forever.
            try:
                async with asyncio.timeout(poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass


class PublishFailed(Exception):
    pass


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
