"""The notifier's SMTP client against a real SMTP server (aiosmtpd): connections are kept
open and reused, a closed one is replaced, and concurrent sends stay within the pool."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email.message import EmailMessage

import aiosmtplib
import pytest

from notifier.mailer import Composer, Notice, Recipient, SmtpMailer
from tests.support.poll import eventually
from tests.support.smtp import SmtpServer

ALICE = Recipient(user_id="u-1", email="alice@example.com", username="alice")


def letter(n: int) -> EmailMessage:
    notice = Notice(event_id=f"e-{n}", kind="welcome", to=ALICE, subject=f"Welcome {n}", context={})
    return Composer("eventshop <shop@example.com>").write(notice).message


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


async def _is(value: bool) -> bool:
    return value


async def test_mails_in_a_row_share_one_connection(smtp: SmtpServer) -> None:
    mailer = SmtpMailer("127.0.0.1", smtp.port)

    for n in range(5):
        await mailer.send(letter(n))

    assert [m["Subject"] for m in smtp.mailbox.messages] == [f"Welcome {n}" for n in range(5)]
    assert smtp.mailbox.greetings == 1
    assert mailer.opened == 1
    await mailer.close()
    assert smtp.mailbox.quits == 1


async def test_concurrent_sends_open_at_most_max_connections(smtp: SmtpServer) -> None:
    mailer = SmtpMailer("127.0.0.1", smtp.port, max_connections=2)

    await asyncio.gather(*(mailer.send(letter(n)) for n in range(12)))

    assert sorted(str(m["Subject"]) for m in smtp.mailbox.messages) == sorted(
        f"Welcome {n}" for n in range(12)
    )
    assert 1 <= smtp.mailbox.greetings <= 2
    await mailer.close()


async def test_a_connection_the_relay_closed_is_replaced_not_used(smtp: SmtpServer) -> None:
    # given a kept-open connection
    mailer = SmtpMailer("127.0.0.1", smtp.port)
    await mailer.send(letter(1))
    (kept,) = mailer.idle
    # when the relay restarts (as after an idle timeout or a deploy), closing it
    smtp.stop()
    await eventually(lambda: _is(not kept.is_connected), what="the client to see the close")
    smtp.start()
    # then the next mail goes out on a new connection
    await mailer.send(letter(2))
    assert [m["Subject"] for m in smtp.mailbox.messages] == ["Welcome 1", "Welcome 2"]
    assert mailer.opened == 2
    await mailer.close()


async def test_a_failed_send_drops_its_connection(smtp: SmtpServer) -> None:
    # given a relay that goes away
    mailer = SmtpMailer("127.0.0.1", smtp.port, timeout=2)
    await mailer.send(letter(1))
    smtp.stop()
    # when a send fails
    with pytest.raises(aiosmtplib.SMTPException):
        await mailer.send(letter(2))
    # then nothing half-used is kept, and the next send after the relay is back works
    assert mailer.idle == ()
    smtp.start()
    await mailer.send(letter(3))
    assert [m["Subject"] for m in smtp.mailbox.messages] == ["Welcome 1", "Welcome 3"]
    await mailer.close()
