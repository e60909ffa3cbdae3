"""Writing and sending the notifier's e-mails: Jinja2 templates (plain text and HTML, the
HTML autoescaped), proper headers, and real SMTP through aiosmtplib."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from events.bus import BadMessage
from events.contracts import utcnow

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("welcome", "order_confirmation", "receipt", "payment_failed")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAMESPACE = uuid.UUID("6c1f3a0e-8d4b-4f5e-9a51-2f0e6b7c9d10")


@dataclass(frozen=True)
class Recipient:
    user_id: str
    email: str
    username: str


@dataclass(frozen=True)
class Notice:
    """One e-mail the notifier owes a user because of one event."""

    event_id: str
    kind: str
    to: Recipient
    subject: str
    context: Mapping[str, Any]

    @property
    def key(self) -> str:
        """What makes a notice unique: never two e-mails for one (event id, kind)."""
        return f"{self.event_id}:{self.kind}"


@dataclass(frozen=True)
class Letter:
    notice: Notice
    message: EmailMessage
    text: str
    html: str

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


def message_id(event_id: str, kind: str, domain: str) -> str:
    """Deterministic: a resend of the same notice (after a crash between the send and its
    record) carries the same Message-ID, so mail systems and people can recognise it."""
    local = event_id if _SAFE_ID.fullmatch(event_id) else str(uuid.uuid5(_NAMESPACE, event_id))
    return f"<{kind}.{local}@{domain}>"


class Composer:
    """Turns a :class:`Notice` into a MIME message from ``templates/<kind>.{txt,html}``."""

    def __init__(self, sender: str, templates: Path = TEMPLATES) -> None:
        name, addr = parseaddr(sender)
        self.sender = Address(display_name=name or "eventshop", addr_spec=addr)
        self.env = Environment(
            loader=FileSystemLoader(templates),
            autoescape=select_autoescape(["html"], default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    @property
    def domain(self) -> str:
        return self.sender.domain or "localhost"

    def render(self, notice: Notice) -> tuple[str, str]:
        context = {"username": notice.to.username, **notice.context}
        text = self.env.get_template(f"{notice.kind}.txt").render(context)
        html = self.env.get_template(f"{notice.kind}.html").render(context)
        return text, html

    def write(self, notice: Notice, *, now: datetime | None = None) -> Letter:
        text, html = self.render(notice)
        message = EmailMessage()
        try:
            message["From"] = self.sender
            message["To"] = Address(display_name=notice.to.username, addr_spec=notice.to.email)
            message["Subject"] = notice.subject
        except (ValueError, IndexError) as exc:
            # A bad address or header no retry can fix: park the event for an operator.
            raise BadMessage(f"cannot address notice {notice.key}: {exc}") from exc
        message["Date"] = format_datetime(now or utcnow())
        message["Message-ID"] = message_id(notice.event_id, notice.kind, self.domain)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return Letter(notice=notice, message=message, text=text, html=html)


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the relay; raises when the relay did not accept it."""
        ...


class MailRejected(BadMessage):
    """The relay refused the message for good (5xx): retrying would not change its mind."""


class SmtpMailer:
    """Sends through a small pool of kept-open SMTP connections.

    A connection per mail costs a TCP handshake, the greeting, EHLO (and STARTTLS and AUTH
    when configured) and QUIT on top of MAIL/RCPT/DATA; the notifier sends two mails per
    order. At most ``max_connections`` are open at once (the notifier passes its prefetch,
    so a message in hand never waits for a connection); the wait for one counts against
    ``timeout``, which bounds the whole send as the notice's claim lease expects. An idle
    connection the relay has closed (its idle timeout, a restart) is noticed and replaced
    before it is used. A connection that saw any error is dropped, never reused, so a
    failed send leaves nothing half-done on it for the next mail.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        tls: bool = False,
        timeout: float = 10.0,
        max_connections: int = 4,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.tls = tls
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[aiosmtplib.SMTP] = []
        self.opened = 0  # connections opened so far (read by tests and benchmarks)

    @property
    def idle(self) -> tuple[aiosmtplib.SMTP, ...]:
        """The open connections waiting for the next mail."""
        return tuple(self._idle)

    async def _connection(self) -> aiosmtplib.SMTP:
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp
            smtp.close()
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls,
            start_tls=self.starttls,
            timeout=self.timeout,
        )
        try:
            await smtp.connect()
        except BaseException:
            smtp.close()
            raise
        self.opened += 1
        return smtp

    async def send(self, message: EmailMessage) -> None:
        try:
            await self._send(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(r.code >= 500 for r in exc.recipients):
                raise MailRejected(f"relay refused the recipient: {exc}") from exc
            raise
        except aiosmtplib.SMTPDataError as exc:
            if exc.code >= 500:
                raise MailRejected(f"relay refused the message: {exc}") from exc
            raise

    async def _send(self, message: EmailMessage) -> None:
        smtp: aiosmtplib.SMTP | None = None
        async with asyncio.timeout(self.timeout), self._slots:
            try:
                smtp = await self._connection()
                await smtp.send_message(message)
            except BaseException:
                if smtp is not None:
                    smtp.close()  # never reused after an error
                raise
            self._idle.append(smtp)

    async def close(self) -> None:
        """Say QUIT on the idle connections (the service is stopping)."""
        idle, self._idle = self._idle, []
        for smtp in idle:
            try:
                async with asyncio.timeout(2):
                    await smtp.quit()
            except Exception:
                smtp.close()
