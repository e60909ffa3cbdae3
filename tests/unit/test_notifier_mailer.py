"""The notifier's e-mails as a recipient sees them, and its settings, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from pydantic import ValidationError

from events.bus import BadMessage
from notifier.config import Settings
from notifier.mailer import Composer, Notice, Recipient, message_id

ALICE = Recipient(user_id="u1", email="alice@example.com", username="alice")


def notice(kind: str, context: dict[str, Any], to: Recipient = ALICE) -> Notice:
    return Notice(event_id="ev-1", kind=kind, to=to, subject="Subject line", context=context)


def bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())


ORDER = {
    "order_id": "o-7",
    "items": [
        {"product_id": "p1", "quantity": 2, "unit_price": "9.95", "line_total": "19.90"},
        {"product_id": "p2", "quantity": 1, "unit_price": "0.10", "line_total": "0.10"},
    ],
    "total": "20.00",
    "currency": "EUR",
}


def test_message_has_the_headers_a_mail_system_expects() -> None:
    now = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    letter = Composer("eventshop <shop@shop.example>").write(notice("welcome", {}), now=now)
    message = letter.message
    assert message["From"] == "eventshop <shop@shop.example>"
    assert message["To"] == "alice <alice@example.com>"
    assert message["Subject"] == "Subject line"
    assert message["Date"] == "Fri, 04 Dec 2026 15:00:00 +0000"
    assert message["Message-ID"] == "<welcome.ev-1@shop.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"


def test_message_id_is_the_same_for_a_resend_and_differs_per_kind() -> None:
    assert message_id("ev-1", "receipt", "x.test") == message_id("ev-1", "receipt", "x.test")
    assert message_id("ev-1", "receipt", "x.test") != message_id("ev-1", "welcome", "x.test")
    assert message_id("ev-2", "receipt", "x.test") != message_id("ev-1", "receipt", "x.test")


def test_message_id_stays_valid_for_event_ids_with_odd_characters() -> None:
    mid = message_id("weird id <with> spaces@and@ats", "receipt", "x.test")
    assert mid == message_id("weird id <with> spaces@and@ats", "receipt", "x.test")
    local = mid[1:-1].split("@")
    assert len(local) == 2
    assert " " not in mid


def test_welcome_greets_the_user_in_text_and_html() -> None:
    text, html = bodies(Composer("shop@localhost").write(notice("welcome", {})).message)
    assert "Hi alice," in text
    assert "welcome to eventshop" in text
    assert "<strong>alice</strong>" in html


def test_order_confirmation_lists_items_and_total() -> None:
    text, html = bodies(
        Composer("shop@localhost").write(notice("order_confirmation", ORDER)).message
    )
    assert "o-7" in text
    assert "2 x p1 at 9.95 EUR = 19.90 EUR" in text
    assert "1 x p2 at 0.10 EUR = 0.10 EUR" in text
    assert "Total: 20.00 EUR" in text
    assert "<td>p1</td>" in html
    assert "20.00 EUR" in html


def test_receipt_and_failure_notice_carry_amount_and_reason() -> None:
    composer = Composer("shop@localhost")
    receipt, _ = bodies(
        composer.write(
            notice(
                "receipt",
                {"order_id": "o-7", "payment_id": "pay-1", "amount": "20.00", "currency": "EUR"},
            )
        ).message
    )
    assert "Amount paid: 20.00 EUR" in receipt
    assert "pay-1" in receipt
    failed, html = bodies(
        composer.write(
            notice(
                "payment_failed",
                {
                    "order_id": "o-7",
                    "amount": "20.00",
                    "currency": "EUR",
                    "reason": "card declined",
                },
            )
        ).message
    )
    assert "Reason: card declined" in failed
    assert "card declined" in html


def test_html_is_escaped_and_plain_text_is_not() -> None:
    mallory = Recipient(user_id="u2", email="m@example.com", username="<b>mallory</b>")
    context = {
        "order_id": "o-1",
        "amount": "1.00",
        "currency": "EUR",
        "reason": "<script>alert(1)</script>",
    }
    text, html = bodies(
        Composer("shop@localhost").write(notice("payment_failed", context, to=mallory)).message
    )
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;mallory&lt;/b&gt;" in html
    assert "Reason: <script>alert(1)</script>" in text


def test_missing_template_value_fails_loudly() -> None:
    with pytest.raises(Exception, match="order_id"):
        Composer("shop@localhost").write(notice("receipt", {"amount": "1.00"}))


def test_unaddressable_recipient_is_a_bad_message() -> None:
    broken = Recipient(user_id="u3", email="not an address", username="x")
    with pytest.raises(BadMessage, match="cannot address"):
        Composer("shop@localhost").write(notice("welcome", {}, to=broken))


def test_settings_default_to_the_local_relay() -> None:
    settings = Settings()
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_from) == (
        "localhost",
        1025,
        "shop@localhost",
    )
    assert settings.service_name == "notifier"
    assert settings.smtp_password is None
    assert settings.send_lease_seconds > settings.smtp_timeout


def test_settings_read_the_relay_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("SMTP_PORT", "587")
    monkeypatch.setenv("SMTP_FROM", "Shop <noreply@example.com>")
    monkeypatch.setenv("SMTP_USERNAME", "mailer")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("SMTP_STARTTLS", "true")
    settings = Settings()
    assert settings.smtp_port == 587
    assert settings.smtp_starttls is True
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_settings_refuse_a_sender_that_is_no_address() -> None:
    with pytest.raises(ValidationError, match="SMTP_FROM"):
        Settings(smtp_from="nobody")


def test_settings_refuse_both_tls_modes_at_once() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(smtp_tls=True, smtp_starttls=True)
