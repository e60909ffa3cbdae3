"""The notifier against a real RabbitMQ, a real Mongo-wire server and a real SMTP server
(aiosmtpd): each notice is one e-mail, whatever the bus or the relay does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import pytest
from prometheus_client import REGISTRY

from events.contracts import (
    OrderCreated,
    OrderLine,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
    utcnow,
)
from events.runtime import Runtime
from notifier.bootstrap import bootstrap
from notifier.config import Settings
from notifier.store import NotifierStore
from tests.support.helpers import publish_event, queue_messages
from tests.support.poll import eventually, stays
from tests.support.service import running_worker
from tests.support.smtp import SmtpServer

#: Room for a relay that stays down for a few attempts.
PATIENT_RETRIES = (0.3, 0.6, 1.2, 2.4, 4.8)


def alice() -> UserRegistered:
    n = uuid.uuid4().hex[:8]
    return UserRegistered(user_id=f"u-{n}", username=f"alice_{n}", email=f"alice_{n}@example.com")


def order_of(user: UserRegistered, order_id: str = "o-1") -> OrderCreated:
    return OrderCreated(
        order_id=order_id,
        user_id=user.user_id,
        username=user.username,
        items=(
            OrderLine(product_id="p-espresso", quantity=2, unit_price=Decimal("9.95")),
            OrderLine(product_id="p-filter", quantity=1, unit_price=Decimal("4.10")),
        ),
        total=Decimal("24.00"),
        currency="EUR",
        payment_method="card_ok",
    )


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def counted(outcome: str, event_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "eventshop_messages_total",
        {"service": "notifier", "event_type": event_type, "outcome": outcome},
    )
    return value or 0.0


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], smtp: SmtpServer) -> Settings:
    return make_settings(Settings, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_timeout=5)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Runtime]:
    async with running_worker(settings, bootstrap) as runtime:
        yield runtime


@pytest.fixture
def store(worker: Runtime, settings: Settings) -> NotifierStore:
    return NotifierStore(worker.mongo, settings.database_name, source="/notifier")


async def mails(smtp: SmtpServer, address: str, count: int) -> list[EmailMessage]:
    """Wait until ``address`` has ``count`` e-mails, then make sure no more arrive."""
    await eventually(
        lambda: _is(len(smtp.mailbox.to(address)) >= count), what=f"{count} mail(s) to {address}"
    )
    await stays(lambda: _is(len(smtp.mailbox.to(address)) == count), seconds=1.0)
    return smtp.mailbox.to(address)


async def registered(smtp: SmtpServer, amqp_url: str) -> UserRegistered:
    user = alice()
    await publish_event(amqp_url, user)
    await eventually(lambda: _is(smtp.mailbox.to(user.email)), what="the welcome mail")
    return user


async def test_user_registered_sends_one_welcome_email(
    worker: Runtime, store: NotifierStore, smtp: SmtpServer, amqp_url: str
) -> None:
    # given a new user
    user = alice()
    # when user.registered arrives
    envelope = await publish_event(amqp_url, user)
    # then exactly one welcome reaches their address, with proper headers and both bodies
    [welcome] = await mails(smtp, user.email, 1)
    assert welcome["To"].addresses[0].addr_spec == user.email
    assert welcome["From"] == "eventshop <shop@localhost>"
    assert welcome["Subject"] == f"Welcome to eventshop, {user.username}"
    assert welcome["Message-ID"].strip() == f"<welcome.{envelope.id}@localhost>"
    assert welcome["Date"]
    assert f"Hi {user.username}," in text_of(welcome)
    assert user.username in html_of(welcome)
    # and the directory knows them
    recipient = await store.recipient(user.user_id)
    assert recipient is not None
    assert recipient.email == user.email


async def test_order_created_sends_confirmation_with_items_and_total(
    worker: Runtime, store: NotifierStore, smtp: SmtpServer, amqp_url: str
) -> None:
    user = await registered(smtp, amqp_url)
    envelope = await publish_event(amqp_url, order_of(user, "o-42"))
    _, confirmation = await mails(smtp, user.email, 2)
    assert confirmation["Subject"] == "Your eventshop order o-42"
    text = text_of(confirmation)
    assert "2 x p-espresso at 9.95 EUR = 19.90 EUR" in text
    assert "1 x p-filter at 4.10 EUR = 4.10 EUR" in text
    assert "Total: 24.00 EUR" in text
    assert "24.00 EUR" in html_of(confirmation)
    # and what was sent is on record
    record = await store.notice(f"{envelope.id}:order_confirmation")
    assert record is not None
    assert record["status"] == "sent"
    assert record["to"] == user.email
    # a long Message-ID may be folded onto its own line; parsers keep the folding space
    assert record["message_id"] == confirmation["Message-ID"].strip()
    assert record["subject"] == confirmation["Subject"]
    assert "Total: 24.00 EUR" in record["text"]
    assert record["attempts"] == 1


async def test_payment_completed_sends_receipt(
    worker: Runtime, smtp: SmtpServer, amqp_url: str
) -> None:
    user = await registered(smtp, amqp_url)
    await publish_event(
        amqp_url,
        PaymentCompleted(
            payment_id="pay-9",
            order_id="o-9",
            user_id=user.user_id,
            amount=Decimal("24.00"),
            currency="EUR",
        ),
    )
    _, receipt = await mails(smtp, user.email, 2)
    assert receipt["Subject"] == "Receipt for order o-9"
    assert "Amount paid: 24.00 EUR" in text_of(receipt)
    assert "pay-9" in text_of(receipt)


async def test_payment_failed_sends_notice_with_reason(
    worker: Runtime, smtp: SmtpServer, amqp_url: str
) -> None:
    user = await registered(smtp, amqp_url)
    await publish_event(
        amqp_url,
        PaymentFailed(
            payment_id="pay-8",
            order_id="o-8",
            user_id=user.user_id,
            amount=Decimal("24.00"),
            currency="EUR",
            reason="card declined by issuer",
        ),
    )
    _, notice = await mails(smtp, user.email, 2)
    assert notice["Subject"] == "Payment failed for order o-8"
    assert "Reason: card declined by issuer" in text_of(notice)
    assert "card declined by issuer" in html_of(notice)


async def test_duplicate_event_sends_one_email(
    worker: Runtime, store: NotifierStore, smtp: SmtpServer, amqp_url: str
) -> None:
    user = await registered(smtp, amqp_url)
    # when the same order.created is delivered twice at once
    envelope = await publish_event(amqp_url, order_of(user), times=2)
    await mails(smtp, user.email, 2)
    # and once more later, as after an ack lost once the mail was sent
    before = counted("consumed", "OrderCreated")
    await publish_event(amqp_url, order_of(user), event_id=envelope.id)
    await eventually(lambda: _is(counted("consumed", "OrderCreated") > before))
    # then the customer got one confirmation
    await mails(smtp, user.email, 2)
    record = await store.notice(f"{envelope.id}:order_confirmation")
    assert record is not None
    assert record["status"] == "sent"


async def test_smtp_outage_delays_email_and_sends_it_once(
    make_settings: Callable[..., Settings], amqp_url: str
) -> None:
    # given a relay that is down
    smtp = SmtpServer()
    settings = make_settings(
        Settings,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_timeout=5,
        retry_delays=PATIENT_RETRIES,
    )
    async with running_worker(settings, bootstrap) as runtime:
        store = NotifierStore(runtime.mongo, settings.database_name, source="/notifier")
        user = alice()
        envelope = await publish_event(amqp_url, user)
        key = f"{envelope.id}:welcome"

        async def failed_once() -> bool:
            record = await store.notice(key)
            return bool(record and record["status"] == "failed" and record["attempts"] >= 1)

        await eventually(failed_once, what="a failed send on record")
        # when the relay comes back
        smtp.start()
        try:
            # then the welcome is delivered, once
            [welcome] = await mails(smtp, user.email, 1)
            record = await store.notice(key)
            assert record is not None
            assert record["status"] == "sent"
            assert record["attempts"] >= 2
            assert welcome["Message-ID"].strip() == record["message_id"]
        finally:
            smtp.stop()


async def test_relay_down_for_good_parks_the_event_after_retries(
    make_settings: Callable[..., Settings], amqp_url: str
) -> None:
    smtp = SmtpServer()  # never started
    settings = make_settings(Settings, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_timeout=5)
    async with running_worker(settings, bootstrap) as runtime:
        store = NotifierStore(runtime.mongo, settings.database_name, source="/notifier")
        envelope = await publish_event(amqp_url, alice())
        parked = await eventually(
            lambda: queue_messages(amqp_url, "notifier.dlq"), what="the parked event"
        )
        assert parked[0].message_id == envelope.id
        assert parked[0].headers["x-attempt"] == 4
        assert parked[0].headers["x-error"]
        record = await store.notice(f"{envelope.id}:welcome")
        assert record is not None
        assert (record["status"], record["attempts"]) == ("failed", 4)
        assert record["last_error"]


async def test_order_for_unknown_user_is_retried_until_user_registered_arrives(
    make_settings: Callable[..., Settings], smtp: SmtpServer, amqp_url: str
) -> None:
    settings = make_settings(
        Settings,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_timeout=5,
        retry_delays=PATIENT_RETRIES,
    )
    async with running_worker(settings, bootstrap):
        # given an order whose user the notifier has not heard of yet
        user = alice()
        retried_before = counted("retried", "OrderCreated")
        await publish_event(amqp_url, order_of(user))
        # then it is retried, not dropped
        await eventually(lambda: _is(counted("retried", "OrderCreated") > retried_before))
        assert smtp.mailbox.to(user.email) == []
        # when user.registered catches up
        await publish_event(amqp_url, user)
        # then both the welcome and the order confirmation arrive, once each
        received = await mails(smtp, user.email, 2)
        assert sorted(str(m["Subject"]) for m in received) == sorted(
            [f"Welcome to eventshop, {user.username}", "Your eventshop order o-1"]
        )


async def test_stale_claim_of_a_crashed_sender_is_taken_over_and_sent_once(
    worker: Runtime, store: NotifierStore, smtp: SmtpServer, amqp_url: str
) -> None:
    # given a notice claimed by a process that died before it could send or record
    user, event_id = alice(), str(uuid.uuid4())
    await store.notices.insert_one(
        {
            "_id": f"{event_id}:welcome",
            "status": "sending",
            "lease_until": utcnow() - timedelta(seconds=1),
            "lease_owner": "dead-process",
            "attempts": 1,
        }
    )
    # when the event is redelivered
    await publish_event(amqp_url, user, event_id=event_id)
    # then the notice is sent once, under the same Message-ID a first send would have had
    [welcome] = await mails(smtp, user.email, 1)
    assert welcome["Message-ID"].strip() == f"<welcome.{event_id}@localhost>"
    record = await store.notice(f"{event_id}:welcome")
    assert record is not None
    assert (record["status"], record["attempts"]) == ("sent", 2)


async def test_delivery_waits_for_a_concurrent_sender_instead_of_sending_again(
    worker: Runtime, store: NotifierStore, smtp: SmtpServer, amqp_url: str
) -> None:
    # given another delivery of the same event holding the notice right now
    user, event_id = alice(), str(uuid.uuid4())
    key = f"{event_id}:welcome"
    await store.notices.insert_one(
        {
            "_id": key,
            "status": "sending",
            "lease_until": utcnow() + timedelta(seconds=60),
            "lease_owner": "other-delivery",
            "attempts": 1,
        }
    )
    consumed = counted("consumed", "UserRegistered")
    await publish_event(amqp_url, user, event_id=event_id)
    # then this delivery does not send while the other one is at it
    await stays(lambda: _is(smtp.mailbox.to(user.email) == []), seconds=0.5)
    # when the other delivery records its send
    await store.mark_sent(key, owner="other-delivery")
    # then this one finishes without sending anything
    await eventually(lambda: _is(counted("consumed", "UserRegistered") > consumed))
    assert smtp.mailbox.to(user.email) == []


async def _is(value: Any) -> Any:
    return value
