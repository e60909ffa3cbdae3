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
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.tls = tls
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await aiosmtplib.send(
                    message,
                    hostname=self.host,
                    port=self.port,
                    username=self.username,
                    password=self.password,
                    use_tls=self.tls,
                    start_tls=self.starttls,
                    timeout=self.timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(r.code >= 500 for r in exc.recipients):
                raise MailRejected(f"relay refused the recipient: {exc}") from exc
            raise
        except aiosmtplib.SMTPDataError as exc:
            if exc.code >= 500:
                raise MailRejected(f"relay refused the message: {exc}") from exc
            raise
