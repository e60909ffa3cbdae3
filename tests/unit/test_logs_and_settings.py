"""Structured logs carry the bound context and never a secret; settings parse the env."""

from __future__ import annotations

import json
import logging

import pytest

from events import logs
from events.settings import ServiceSettings


def test_json_log_line_carries_context_and_redacts_secrets() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "login failed for %s",
            "args": ("alice",),
            "levelname": "WARNING",
            "name": "users",
            "password": "hunter22",
            "order_id": "o1",
        }
    )
    with logs.bind(correlationid="c-42", event_id="e-1"):
        line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "login failed for alice"
    assert line["correlationid"] == "c-42"
    assert line["event_id"] == "e-1"
    assert line["order_id"] == "o1"
    assert line["password"] == "[redacted]"
    assert {"ts", "level"} <= line.keys()


def test_bound_context_ends_with_the_block() -> None:
    with logs.bind(correlationid="inside"):
        assert logs.correlation_id() == "inside"
    assert logs.correlation_id() is None


def test_retry_delays_come_from_a_plain_env_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_DELAYS", "0.5, 2 10")
    monkeypatch.setenv("MONGODB_DB_PREFIX", "staging_")
    settings = ServiceSettings(service_name="payments")
    assert settings.retry_delays == (0.5, 2.0, 10.0)
    assert settings.database_name == "staging_payments"


def test_defaults_match_the_contract() -> None:
    settings = ServiceSettings()
    assert settings.amqp_url == "amqp://guest:guest@localhost:5672/"
    assert settings.mongodb_url == "mongodb://localhost:27017/"
    assert settings.log_format == "json"
    assert settings.log_level == "INFO"
