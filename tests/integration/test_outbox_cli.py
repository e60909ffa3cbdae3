"""``python -m events outbox status`` against a real Mongo-wire server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from events.bus import Broker
from events.contracts import OrderCreated, OrderLine
from events.store import Store, Tx
from tests.support.helpers import run_cli


def order(n: int) -> OrderCreated:
    return OrderCreated(
        order_id=f"o{n}",
        user_id="u1",
        username="ann",
        items=(OrderLine(product_id="p1", quantity=1, unit_price="5.00"),),
        total="5.00",
        currency="EUR",
    )


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, mongodb_url: str, db_prefix: str) -> str:
    monkeypatch.setenv("MONGODB_URL", mongodb_url)
    monkeypatch.setenv("MONGODB_DB_PREFIX", db_prefix)
    return db_prefix


async def store_for(mongo: Any, prefix: str, service: str) -> Store:
    store = Store(mongo, f"{prefix}{service}", source=f"/{service}")
    await store.setup()
    return store


async def test_status_reports_pending_events_and_the_oldest_age_per_service(
    mongo: Any, broker: Broker, cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given orders committed two events that no relay published yet, and users has none
    orders = await store_for(mongo, cli_env, "orders")
    await store_for(mongo, cli_env, "users")

    async def place(tx: Tx) -> None:
        await tx.record(order(1))
        await tx.record(order(2))

    await orders.transaction(place)

    # when the operator asks for the outbox status
    code, out, _ = await run_cli(capsys, "outbox", "status", "--json")

    # then every service is listed: orders with its backlog, users empty, payments without
    # an outbox (its database was never created here)
    assert code == 0
    rows = {row["service"]: row for row in json.loads(out)}
    assert set(rows) == {"users", "orders", "payments", "notifier", "analytics", "recommender"}
    assert rows["orders"]["database"] == f"{cli_env}orders"
    assert rows["orders"]["pending"] == 2
    assert rows["orders"]["oldest_pending_seconds"] >= 0
    assert rows["users"]["pending"] == 0
    assert rows["payments"]["pending"] is None

    code, out, _ = await run_cli(capsys, "outbox", "status", "--service", "orders")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SERVICE", "DATABASE", "PENDING", "OLDEST", "PENDING"]
    assert lines[1].split()[:3] == ["orders", f"{cli_env}orders", "2"]
    assert lines[1].endswith("s")
    assert len(lines) == 2

    # when the relay has published them, the backlog is gone
    assert await orders.outbox.publish_pending(broker) == 2
    code, out, _ = await run_cli(capsys, "outbox", "status", "--service", "orders", "--json")
    assert json.loads(out)[0]["pending"] == 0


async def test_status_without_a_database_fails_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONGODB_URL", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300")
    code, _, err = await run_cli(capsys, "outbox", "status")
    assert code == 1
    assert "cannot reach MongoDB" in err
