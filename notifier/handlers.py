"""What the notifier does with each event: keep its directory, and send each notice once.

How "never the same notice twice" holds (each notice is keyed by (event id, kind)):

1. claim the notice in the database (status ``sending``, a lease, what is about to be sent);
   a notice already ``sent`` is skipped; one another delivery holds is waited for;
2. send it over SMTP;
3. mark it ``sent`` — before the handler returns, so before the bus acks.

A lost ack (or a duplicated event) therefore finds ``sent`` and sends nothing. The one gap
left is a crash after the relay accepted the mail and before step 3: the redelivery sends it
again, with the same deterministic Message-ID. We choose that side on purpose — a customer
may see a receipt twice (recognisably the same message), but never misses one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from events.bus import Handler, current_delivery
from events.contracts import (
    CloudEvent,
    Event,
    OrderCreated,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
    utcnow,
)
from notifier.mailer import Composer, Mailer, Notice, Recipient
from notifier.store import Claim, NotifierStore

log = logging.getLogger("notifier")


@dataclass(frozen=True)
class Context:
    store: NotifierStore
    composer: Composer
    mailer: Mailer
    lease_seconds: float = 15.0


class UnknownRecipient(Exception):
    """The event's user is not in the directory yet (its ``user.registered`` may still be on
    the way): retried by the bus rather than dropped."""


async def on_user_registered(event: UserRegistered, ctx: Context) -> None:
    recipient = Recipient(user_id=event.user_id, email=event.email, username=event.username)
    await ctx.store.remember(recipient)
    await send_once(ctx, recipient, "welcome", f"Welcome to eventshop, {event.username}", {})


async def on_order_created(event: OrderCreated, ctx: Context) -> None:
    recipient = await _recipient(ctx, event.user_id)
    items = [
        {
            "product_id": line.product_id,
            "quantity": line.quantity,
            "unit_price": _money(line.unit_price),
            "line_total": _money(line.unit_price * line.quantity),
        }
        for line in event.items
    ]
    context = {
        "order_id": event.order_id,
        "items": items,
        "total": _money(event.total),
        "currency": event.currency,
    }
    subject = f"Your eventshop order {event.order_id}"
    await send_once(ctx, recipient, "order_confirmation", subject, context)


async def on_payment_completed(event: PaymentCompleted, ctx: Context) -> None:
    recipient = await _recipient(ctx, event.user_id)
    context = {
        "order_id": event.order_id,
        "payment_id": event.payment_id,
        "amount": _money(event.amount),
        "currency": event.currency,
    }
    await send_once(ctx, recipient, "receipt", f"Receipt for order {event.order_id}", context)


async def on_payment_failed(event: PaymentFailed, ctx: Context) -> None:
    recipient = await _recipient(ctx, event.user_id)
    context = {
        "order_id": event.order_id,
        "amount": _money(event.amount),
        "currency": event.currency,
        "reason": event.reason,
    }
    subject = f"Payment failed for order {event.order_id}"
    await send_once(ctx, recipient, "payment_failed", subject, context)


async def send_once(
    ctx: Context, to: Recipient, kind: str, subject: str, context: Mapping[str, Any]
) -> None:
    """Send the ``kind`` notice for the event being handled, unless it was sent before."""
    delivery = current_delivery()
    if delivery is None:
        raise RuntimeError("send_once() outside a message handler")
    notice = Notice(event_id=delivery.event_id, kind=kind, to=to, subject=subject, context=context)
    letter = ctx.composer.write(notice)
    owner = uuid.uuid4().hex
    while True:
        claim, until = await ctx.store.claim(letter, owner=owner, lease=ctx.lease_seconds)
        if claim is Claim.SENT:
            log.info("%s e-mail for this event was sent before; not sending again", kind)
            return
        if claim is Claim.ACQUIRED:
            break
        # Another delivery of this event holds it: wait for its result, or for its lease to
        # run out (it died mid-send) and take over. Waiting here, not raising, keeps a dead
        # holder's lease from outlasting our retries.
        wait = (until - utcnow()).total_seconds()
        await asyncio.sleep(min(max(wait, 0.05), 0.5))
    try:
        await ctx.mailer.send(letter.message)
    except Exception as exc:
        await ctx.store.release(notice.key, owner=owner, error=f"{type(exc).__name__}: {exc}")
        raise
    await ctx.store.mark_sent(notice.key, owner=owner)
    log.info(
        "sent %s e-mail",
        kind,
        extra={"to": to.email, "message_id": letter.message_id},
    )


async def _recipient(ctx: Context, user_id: str) -> Recipient:
    recipient = await ctx.store.recipient(user_id)
    if recipient is None:
        raise UnknownRecipient(
            f"user {user_id} is not in the notifier's directory yet; retrying until its "
            "user.registered arrives"
        )
    return recipient


def _money(amount: Decimal) -> str:
    return format(amount, "f")


SUBSCRIPTIONS: Mapping[type[Event] | type[CloudEvent], Handler] = {
    UserRegistered: on_user_registered,
    OrderCreated: on_order_created,
    PaymentCompleted: on_payment_completed,
    PaymentFailed: on_payment_failed,
}
