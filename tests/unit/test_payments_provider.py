"""The simulated provider's rules and the payments settings, without I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest

from events.settings import ServiceSettings
from payments.config import Settings
from payments.provider import (
    FLAKY_FAILURES,
    PaymentDeclined,
    ProviderUnavailable,
    simulate,
)

TEN = Decimal("10.00")


def test_good_card_is_charged_on_the_first_attempt() -> None:
    simulate("card_ok", TEN, attempt=1)


def test_declined_card_is_declined_on_every_attempt() -> None:
    for attempt in (1, 2, 5):
        with pytest.raises(PaymentDeclined, match="declined"):
            simulate("card_declined", TEN, attempt=attempt)


def test_flaky_card_fails_transiently_twice_then_succeeds() -> None:
    for attempt in (1, 2):
        with pytest.raises(ProviderUnavailable):
            simulate("card_flaky", TEN, attempt=attempt)
    simulate("card_flaky", TEN, attempt=3)


def test_flaky_card_succeeds_within_the_default_retry_budget() -> None:
    # the bus makes len(retry_delays) + 1 attempts before parking a message
    attempts = len(ServiceSettings().retry_delays) + 1
    assert attempts > FLAKY_FAILURES
    simulate("card_flaky", TEN, attempt=FLAKY_FAILURES + 1)


def test_unknown_method_is_a_permanent_decline() -> None:
    with pytest.raises(PaymentDeclined, match="unsupported payment method 'bitcoin'"):
        simulate("bitcoin", TEN, attempt=1)


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-1.00")])
def test_non_positive_amount_is_declined(amount: Decimal) -> None:
    with pytest.raises(PaymentDeclined, match="invalid amount"):
        simulate("card_ok", amount, attempt=1)


def test_settings_read_latency_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_LATENCY_MS", "250")
    settings = Settings()
    assert settings.payment_latency_ms == 250
    assert settings.database_name.endswith("payments")


def test_settings_default_to_no_latency_and_the_payments_queue() -> None:
    settings = Settings()
    assert settings.payment_latency_ms == 0
    assert settings.service_name == "payments"
