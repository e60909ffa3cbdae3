"""Logging in against a real Mongo-wire server: tokens that other services can verify from
the JWKS alone, one answer for every bad credential, and throttling that replicas share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import extract_parameters

from events.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER, keys_from_jwks, verify
from tests.support.service import running_app
from users.api import create_app
from users.config import Settings
from users.tokens import SigningKey

FAST_ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456, "argon2_parallelism": 1}
PASSWORD = "correct horse battery"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(Settings, **FAST_ARGON2)


@pytest.fixture
async def users(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(settings)) as client:
        yield client


async def register(client: httpx.AsyncClient, username: str = "alice") -> dict[str, Any]:
    response = await client.post(
        "/users",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    profile: dict[str, Any] = response.json()
    return profile


async def login(
    client: httpx.AsyncClient, username: str = "alice", password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/auth/token", data={"username": username, "password": password})


async def test_login_issues_a_bearer_token_verifiable_with_the_jwks(
    users: httpx.AsyncClient,
) -> None:
    profile = await register(users)

    response = await login(users, "ALICE")

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert response.headers["cache-control"] == "no-store"
    keys = keys_from_jwks((await users.get("/.well-known/jwks.json")).json())
    principal = verify(body["access_token"], keys, issuer=DEFAULT_ISSUER, audience=DEFAULT_AUDIENCE)
    assert (principal.user_id, principal.username) == (profile["id"], "alice")


async def test_the_token_opens_the_callers_profile_without_the_hash(
    users: httpx.AsyncClient,
) -> None:
    profile = await register(users)
    token = (await login(users)).json()["access_token"]

    response = await users.get("/users/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert response.json() == profile
    assert "argon2" not in response.text


async def test_unknown_user_and_wrong_password_get_the_same_answer(
    users: httpx.AsyncClient,
) -> None:
    await register(users)

    wrong = await login(users, "alice", "not the password")
    unknown = await login(users, "nobody", PASSWORD)
    impossible = await login(users, "no such user!", PASSWORD)

    for response in (wrong, unknown, impossible):
        assert response.status_code == 401
        assert response.json() == {"detail": "incorrect username or password"}
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_missing_field_is_422(users: httpx.AsyncClient) -> None:
    response = await users.post("/auth/token", data={"username": "alice"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]


async def test_five_failures_lock_the_username_with_429_and_retry_after(
    users: httpx.AsyncClient,
) -> None:
    await register(users)
    await register(users, "bob")

    failures = [(await login(users, "alice", f"guess-{i}")).status_code for i in range(5)]
    locked = await login(users, "alice", "guess-6")
    right_password_while_locked = await login(users, "alice", PASSWORD)

    assert failures == [401] * 5
    for response in (locked, right_password_while_locked):
        assert response.status_code == 429
        assert 0 < int(response.headers["retry-after"]) <= 900
        assert "too many failed logins" in response.json()["detail"]
    assert (await login(users, "bob")).status_code == 200, "other usernames are not locked"


async def test_unknown_usernames_are_throttled_like_known_ones(users: httpx.AsyncClient) -> None:
    codes = [(await login(users, "ghost", f"guess-{i}")).status_code for i in range(6)]

    assert codes == [401] * 5 + [429]


async def test_a_burst_of_parallel_guesses_gets_five_tries_only(users: httpx.AsyncClient) -> None:
    await register(users)

    responses = await asyncio.gather(*(login(users, "alice", f"guess-{i}") for i in range(10)))

    assert sorted(r.status_code for r in responses) == [401] * 5 + [429] * 5


async def test_a_successful_login_clears_earlier_failures(users: httpx.AsyncClient) -> None:
    await register(users)
    for i in range(4):
        assert (await login(users, "alice", f"typo-{i}")).status_code == 401

    assert (await login(users)).status_code == 200

    codes = [(await login(users, "alice", f"typo-{i}")).status_code for i in range(6)]
    assert codes == [401] * 5 + [429]


async def test_replicas_share_keys_and_failed_logins(settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        # two replicas starting at the same moment on one database, neither with a key file
        a, b = await asyncio.gather(
            stack.enter_async_context(running_app(create_app(settings))),
            stack.enter_async_context(running_app(create_app(settings))),
        )
        assert (await a.get("/.well-known/jwks.json")).json() == (
            await b.get("/.well-known/jwks.json")
        ).json()

        profile = await register(a)
        token = (await login(a)).json()["access_token"]
        me = await b.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json() == profile

        for i in range(3):
            assert (await login(a, "alice", f"guess-{i}")).status_code == 401
        for i in range(2):
            assert (await login(b, "alice", f"guess-{i}")).status_code == 401
        assert (await login(a)).status_code == 429
        assert (await login(b)).status_code == 429


async def test_a_restart_keeps_the_signing_key(settings: Settings) -> None:
    async with running_app(create_app(settings)) as first:
        await register(first)
        token = (await login(first)).json()["access_token"]
    async with running_app(create_app(settings)) as second:
        me = await second.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200


async def test_a_key_file_is_the_signing_key(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key = SigningKey.generate()
    path = tmp_path / "jwt.pem"
    path.write_text(key.private_pem())
    settings = make_settings(Settings, jwt_private_key_file=path, **FAST_ARGON2)

    async with running_app(create_app(settings)) as users:
        assert (await users.get("/.well-known/jwks.json")).json() == {"keys": [key.public_jwk()]}
        await register(users)
        token = (await login(users)).json()["access_token"]

    principal = verify(
        token, {key.kid: key.public_key}, issuer=DEFAULT_ISSUER, audience=DEFAULT_AUDIENCE
    )
    assert principal.username == "alice"


async def test_a_login_upgrades_a_hash_made_with_older_parameters(
    make_settings: Callable[..., Settings], mongo: Any, db_prefix: str
) -> None:
    users_db = mongo[f"{db_prefix}users"]["users"]
    async with running_app(create_app(make_settings(Settings, **FAST_ARGON2))) as old:
        await register(old)
    stronger = {**FAST_ARGON2, "argon2_time_cost": 3}

    async with running_app(create_app(make_settings(Settings, **stronger))) as new:
        assert (await login(new)).status_code == 200
        rehashed = (await users_db.find_one({"username_key": "alice"}))["password_hash"]
        assert extract_parameters(rehashed).time_cost == 3
        assert (await login(new)).status_code == 200


async def test_no_log_line_carries_a_password_or_its_hash(
    users: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, mongo: Any, db_prefix: str
) -> None:
    caplog.set_level(logging.DEBUG)

    await register(users)
    await login(users)
    await login(users, "alice", "wrong-password")
    await users.post("/users", json={"username": "x!", "email": "x", "password": "short-pw"})

    stored = (await mongo[f"{db_prefix}users"]["users"].find_one({}))["password_hash"]
    for record in caplog.records:
        if record.name.startswith("pymongo"):
            # The driver's DEBUG command log shows documents; events.logs.configure_logging
            # keeps "pymongo" at WARNING or above whatever LOG_LEVEL says.
            continue
        line = f"{record.getMessage()} {record.__dict__}"
        for secret in (PASSWORD, "wrong-password", "short-pw", stored):
            assert secret not in line, record


async def test_a_restart_with_another_failure_window_uses_it(
    make_settings: Callable[..., Settings], mongo: Any, db_prefix: str
) -> None:
    async with running_app(create_app(make_settings(Settings, **FAST_ARGON2))):
        pass
    shorter = make_settings(Settings, login_failure_window_seconds=60, **FAST_ARGON2)

    async with running_app(create_app(shorter)) as users:
        codes = [(await login(users, "ghost", f"guess-{i}")).status_code for i in range(5)]
        locked = await login(users, "ghost", "guess-6")

    assert codes == [401] * 5
    assert locked.status_code == 429
    assert 0 < int(locked.headers["retry-after"]) <= 60
    indexes = await mongo[f"{db_prefix}users"]["login_failures"].index_information()
    assert indexes["expiry"]["expireAfterSeconds"] == 120
