"""Registration against a real Mongo-wire server and a real RabbitMQ: the account and its
``UserRegistered`` event are committed together, once, whatever the broker is doing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support.helpers import target_of, via_proxy
from tests.support.poll import eventually, stays
from tests.support.proxy import TcpProxy
from tests.support.service import running_app
from tests.support.tap import EventTap
from users.api import create_app
from users.config import Settings

#: OWASP's minimum Argon2id profile keeps the tests quick; production defaults are stronger.
FAST_ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456, "argon2_parallelism": 1}
ALICE = {"username": "alice", "email": "alice@example.com", "password": "correct horse battery"}


@pytest.fixture
async def users(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(make_settings(Settings, **FAST_ARGON2))) as client:
        yield client


async def test_registration_answers_201_with_the_public_profile(
    users: httpx.AsyncClient,
) -> None:
    response = await users.post("/users", json=ALICE)

    assert response.status_code == 201
    profile = response.json()
    assert set(profile) == {"id", "username", "email", "created_at"}
    assert (profile["username"], profile["email"]) == ("alice", "alice@example.com")


async def test_registration_publishes_one_user_registered_with_the_contract_fields(
    users: httpx.AsyncClient, tap: EventTap
) -> None:
    response = await users.post(
        "/users",
        json={**ALICE, "email": "Alice@Example.COM"},
        headers={"X-Correlation-ID": "reg-42"},
    )
    assert response.status_code == 201

    (event,) = await tap.wait_for("UserRegistered")
    assert event["specversion"] == "1.0"
    assert event["source"] == "/users"
    assert event["correlationid"] == "reg-42"
    assert event["data"] == {
        "user_id": response.json()["id"],
        "username": "alice",
        "email": "alice@example.com",
    }
    message = tap.messages[0]
    assert message.routing_key == "user.registered"
    assert message.message_id == event["id"]
    assert message.content_type == "application/cloudevents+json"
    await stays(lambda: _is(len(tap.events()) == 1), seconds=0.5)


async def test_the_password_is_stored_only_as_an_argon2id_hash(
    users: httpx.AsyncClient, mongo: Any, db_prefix: str
) -> None:
    response = await users.post("/users", json=ALICE)

    doc = await mongo[f"{db_prefix}users"]["users"].find_one({"_id": response.json()["id"]})
    assert doc["password_hash"].startswith("$argon2id$")
    assert ALICE["password"] not in str(doc)
    assert "password" not in response.text


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"username": "ALICE", "email": "other@example.com"}, "username"),
        ({"username": "bob", "email": "ALICE@example.com"}, "email"),
    ],
)
async def test_a_taken_username_or_email_is_409_and_publishes_nothing_more(
    users: httpx.AsyncClient, tap: EventTap, second: dict[str, str], field: str
) -> None:
    assert (await users.post("/users", json=ALICE)).status_code == 201
    await tap.wait_for("UserRegistered")

    response = await users.post("/users", json={**second, "password": "another password"})

    assert response.status_code == 409
    assert field in response.json()["detail"]
    await stays(lambda: _is(len(tap.events("UserRegistered")) == 1), seconds=0.7)


async def test_concurrent_registrations_of_one_name_let_exactly_one_win(
    users: httpx.AsyncClient, tap: EventTap, mongo: Any, db_prefix: str
) -> None:
    names = ["carol", "Carol", "CAROL", "carol", "cArol", "caroL"]

    responses = await asyncio.gather(
        *(
            users.post(
                "/users",
                json={"username": n, "email": f"c{i}@example.com", "password": "p" * 12},
            )
            for i, n in enumerate(names)
        )
    )

    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * (len(names) - 1)
    assert await mongo[f"{db_prefix}users"]["users"].count_documents({}) == 1
    await tap.wait_for("UserRegistered")
    await stays(lambda: _is(len(tap.events("UserRegistered")) == 1), seconds=0.7)


async def test_invalid_fields_are_422_per_field_without_echoing_the_password(
    users: httpx.AsyncClient, tap: EventTap
) -> None:
    response = await users.post(
        "/users", json={"username": "a!", "email": "not-an-email", "password": "secret7"}
    )

    assert response.status_code == 422
    fields = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert fields == {("body", "username"), ("body", "email"), ("body", "password")}
    assert "secret7" not in response.text
    assert tap.events() == []


MALFORMED = {
    "not JSON": (b"{not json", "application/json"),
    "a JSON array": (b"[]", "application/json"),
    "not UTF-8": (b"\xff\xfe\x00garbage", "application/json"),
    "lone surrogates": (
        b'{"username": "\\ud800ab", "email": "a@example.com", "password": "\\udfffxxxxxxxx"}',
        "application/json",
    ),
    "wrong types": (b'{"username": 1, "email": [], "password": null}', "application/json"),
    "a form": (b"username=alice", "application/x-www-form-urlencoded"),
    "no content type": (b'{"username": "alice"}', ""),
    "a huge body": (b'{"username": "alice"' + b" " * 70_000 + b"}", "application/json"),
}


async def test_malformed_bodies_are_answered_with_4xx(users: httpx.AsyncClient) -> None:
    answers = {}
    for case, (content, content_type) in MALFORMED.items():
        response = await users.post(
            "/users", content=content, headers={"content-type": content_type}
        )
        answers[case] = response.status_code

    assert {case: code for case, code in answers.items() if not 400 <= code < 500} == {}


async def test_a_broker_outage_delays_the_event_but_not_the_registration(
    make_settings: Callable[..., Settings], amqp_url: str, tap: EventTap
) -> None:
    proxy = TcpProxy(*target_of(amqp_url))
    await proxy.start()
    settings = make_settings(Settings, amqp_url=via_proxy(amqp_url, proxy.port), **FAST_ARGON2)
    try:
        async with running_app(create_app(settings)) as users:
            # given the broker is unreachable
            proxy.cut()
            await eventually(
                lambda: _status(users, "/health/ready", 503), what="readiness to report it"
            )
            # when someone registers
            response = await users.post("/users", json=ALICE)
            # then the account exists at once and the event waits
            assert response.status_code == 201
            await stays(lambda: _is(tap.events() == []), seconds=0.5)
            # and once the broker is back the event leaves, once
            proxy.restore()
            (event,) = await tap.wait_for("UserRegistered", timeout=45)
            assert event["data"]["user_id"] == response.json()["id"]
            await stays(lambda: _is(len(tap.events()) == 1), seconds=0.5)
    finally:
        await proxy.stop()


async def _status(client: httpx.AsyncClient, path: str, code: int) -> bool:
    return (await client.get(path)).status_code == code


async def _is(value: Any) -> Any:
    return value
