"""Orders trusts only access tokens signed by the users service's keys, fetched from its
JWKS lazily, cached, refetched for a new ``kid``, and kept while users is down."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_orders_support import (  # noqa: F401 - pytest fixtures, used by name
    Issuer,
    JwksServer,
    bearer,
    jwks_server,
    orders_api,
    orders_issuer,
    place,
)
from tests.support.servers import free_port

PROTECTED = [
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("GET", "/orders/some-order"),
    ("GET", "/recommendations"),
]


# Here a JWKS server and an app per test, not the shared ones: tests count the server's
# requests, stop it and rotate its keys, and the app may refetch at once for an unknown kid.
@pytest.fixture
def users(issuer: Issuer) -> Iterator[JwksServer]:
    with jwks_server(issuer) as server:
        yield server


@pytest.fixture
async def client(make_settings: Any, users: JwksServer) -> AsyncIterator[httpx.AsyncClient]:
    async with orders_api(make_settings, users.url, jwks_refresh_seconds=0) as c:
        yield c


def untrusted_tokens(issuer: Issuer) -> dict[str, str]:
    impostor = Issuer(kid=issuer.kid)  # same kid, another private key
    now = int(time.time())
    return {
        "garbage": "not.a.jwt",
        "empty segments": "..",
        "signed with another key": impostor.token("user-alice"),
        "expired": issuer.token("user-alice", exp=now - 60, iat=now - 660),
        "wrong audience": issuer.token("user-alice", aud="someone-else"),
        "wrong issuer": issuer.token("user-alice", iss="https://evil.example"),
        "alg none": issuer.unsigned_token("user-alice"),
        "HS256 keyed with the public key": issuer.hmac_with_public_key_token("user-alice"),
        "no exp": issuer.token("user-alice", exp=None),
        "no aud": issuer.token("user-alice", aud=None),
        "no iss": issuer.token("user-alice", iss=None),
        "no sub": issuer.token("user-alice", sub=None),
        "sub not a string": issuer.token("user-alice", sub=42),
        "username not a string": issuer.token("user-alice", username=["alice"]),
        "exp not a number": issuer.token("user-alice", exp="tomorrow"),
        "unknown kid": issuer.token("user-alice", kid="no-such-key"),
    }


async def test_every_untrusted_token_is_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    cases: dict[str, dict[str, str]] = {
        "no Authorization header": {},
        "Basic scheme": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "Bearer without token": {"Authorization": "Bearer"},
    }
    cases |= {name: bearer(token) for name, token in untrusted_tokens(issuer).items()}
    for name, headers in cases.items():
        for method, path in PROTECTED:
            response = await client.request(
                method,
                path,
                headers=headers,
                json={"items": [{"product_id": "book-ddia", "quantity": 1}]},
            )

            assert response.status_code == 401, f"{name} {method} {path}: {response.text}"
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
            assert "detail" in response.json()


async def test_a_valid_token_is_accepted(client: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await client.get("/orders", headers=bearer(issuer.token("user-alice")))

    assert response.status_code == 200


async def test_keys_are_fetched_on_first_use_and_then_cached(
    make_settings: Any, users: JwksServer, issuer: Issuer
) -> None:
    async with orders_api(make_settings, users.url) as client:
        # starting up and the public catalog need no keys
        assert (await client.get("/products")).status_code == 200
        assert users.requests == 0

        for n in range(5):
            response = await client.get("/orders", headers=bearer(issuer.token(f"user-{n}")))
            assert response.status_code == 200

        assert users.requests == 1


async def test_known_keys_keep_working_while_the_users_service_is_down(
    make_settings: Any, users: JwksServer, issuer: Issuer
) -> None:
    async with orders_api(make_settings, users.url, jwks_refresh_seconds=0) as client:
        token = issuer.token("user-alice")
        assert (await client.get("/orders", headers=bearer(token))).status_code == 200

        users.stop()

        assert (await client.get("/orders", headers=bearer(token))).status_code == 200
        order = await place(client, token, [("book-ddia", 1)])
        assert order.status_code == 201
        # a key orders never saw cannot be checked now: 401, not a 5xx
        stranger = Issuer().token("user-alice")
        assert (await client.get("/orders", headers=bearer(stranger))).status_code == 401


async def test_orders_starts_and_sells_while_the_users_service_is_not_up(
    make_settings: Any, issuer: Issuer
) -> None:
    nobody_home = f"http://127.0.0.1:{free_port()}"

    async with orders_api(make_settings, nobody_home) as client:
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/products")).status_code == 200
        response = await client.get("/orders", headers=bearer(issuer.token("user-alice")))
        assert response.status_code == 401


async def test_a_rotated_key_is_picked_up_from_the_jwks(
    client: httpx.AsyncClient, users: JwksServer, issuer: Issuer
) -> None:
    # given orders has fetched the current key
    assert (await client.get("/orders", headers=bearer(issuer.token("u1")))).status_code == 200
    # when users starts signing with a new key
    rotated = Issuer()
    users.issuers.append(rotated)
    # then tokens with the new kid are accepted, and old ones still are
    assert (await client.get("/orders", headers=bearer(rotated.token("u1")))).status_code == 200
    assert (await client.get("/orders", headers=bearer(issuer.token("u1")))).status_code == 200
