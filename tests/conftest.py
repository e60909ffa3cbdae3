"""Fixtures for every test layer. Integration and e2e tests get a real RabbitMQ (a fresh
vhost per test) and a real Mongo-wire server (a fresh database prefix per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest

from events.bus import Broker
from events.settings import ServiceSettings
from tests.support import servers
from tests.support.tap import EventTap

S = TypeVar("S", bound=ServiceSettings)

#: Short retry delays so retry paths finish in tests; production defaults are 1s, 5s, 30s.
TEST_RETRY_DELAYS = (0.2, 0.4, 0.8)


@pytest.fixture(scope="session")
def rabbit() -> Iterator[servers.Rabbit]:
    with servers.rabbitmq() as broker:
        yield broker


@pytest.fixture(scope="session")
def mongodb_url() -> Iterator[str]:
    with servers.mongodb() as url:
        yield url


@pytest.fixture
def amqp_url(rabbit: servers.Rabbit) -> Iterator[str]:
    with rabbit.fresh_vhost() as url:
        yield url


@pytest.fixture
def db_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def make_settings(amqp_url: str, mongodb_url: str, db_prefix: str) -> Callable[..., Any]:
    """Build a service's Settings pointed at this test's broker vhost and databases."""

    def make(cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "amqp_url": amqp_url,
            "mongodb_url": mongodb_url,
            "mongodb_db_prefix": db_prefix,
            "retry_delays": TEST_RETRY_DELAYS,
            "outbox_poll_seconds": 0.2,
            "log_format": "console",
        }
        values.update(overrides)
        return cls(**values)

    return make


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    b = Broker(amqp_url, name="test")
    await b.connect(attempts=3)
    yield b
    await b.close()


@pytest.fixture
async def tap(amqp_url: str) -> AsyncIterator[EventTap]:
    """Every event published on ``shop.events`` during the test."""
    t = await EventTap(amqp_url).start()
    yield t
    await t.close()


@pytest.fixture
async def mongo(mongodb_url: str) -> AsyncIterator[Any]:
    from events.store import connect_mongo

    client = await connect_mongo(mongodb_url, name="tests", attempts=5)
    yield client
    await client.close()
