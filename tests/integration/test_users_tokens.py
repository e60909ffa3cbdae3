"""Every way to forge or misuse a bearer token gets 401 with a Bearer challenge. The
service signs with a key from JWT_PRIVATE_KEY_FILE here, so the test can also sign tokens
that are perfectly valid except for one claim."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from events.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from events.contracts import utcnow
from tests.support.service import running_app
from users.api import create_app
from users.config import Settings
from users.tokens import SigningKey

FAST_ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456, "argon2_parallelism": 1}


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
async def users(
    make_settings: Callable[..., Settings], key: SigningKey, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "jwt.pem"
    path.write_text(key.private_pem())
    settings = make_settings(Settings, jwt_private_key_file=path, **FAST_ARGON2)
    async with running_app(create_app(settings)) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def sign(key: Any, claims: dict[str, Any], kid: str, **header: Any) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, **header})


async def test_every_forged_or_misused_token_is_401(
    users: httpx.AsyncClient, key: SigningKey
) -> None:
    response = await users.post(
        "/users",
        json={"username": "alice", "email": "alice@example.com", "password": "p" * 12},
    )
    alice = response.json()["id"]
    now = utcnow()
    good = {
        "sub": alice,
        "username": "alice",
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    json_claims = {**good, "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 300}
    other = SigningKey.generate()
    valid = sign(key.private_key, good, key.kid)
    head, body, signature = valid.split(".")
    public_secret = json.dumps(key.public_jwk()).encode()
    hs256_body = unsigned({"alg": "HS256", "kid": key.kid, "typ": "JWT"}, json_claims)
    hs256 = (
        hs256_body
        + "."
        + b64(hmac.new(public_secret, hs256_body.encode(), hashlib.sha256).digest())
    )

    forged: dict[str, str | None] = {
        "no Authorization header": None,
        "another scheme": f"Basic {valid}",
        "an empty bearer": "Bearer ",
        "garbage": "Bearer not-a-token",
        "three garbage segments": "Bearer a.b.c",
        "alg=none": "Bearer "
        + unsigned({"alg": "none", "kid": key.kid, "typ": "JWT"}, json_claims)
        + ".",
        "HS256 keyed with the public key": f"Bearer {hs256}",
        "signed with another key under our kid": "Bearer " + sign(other.private_key, good, key.kid),
        "signed with another key and kid": "Bearer " + sign(other.private_key, good, other.kid),
        "no kid": "Bearer " + jwt.encode(good, key.private_key, algorithm="EdDSA"),
        "a tampered payload": f"Bearer {head}."
        + b64(json.dumps({**json_claims, "sub": "someone-else"}).encode())
        + f".{signature}",
        "a stripped signature": f"Bearer {head}.{body}.",
        "expired": "Bearer "
        + sign(
            key.private_key,
            {**good, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)},
            key.kid,
        ),
        "a wrong audience": "Bearer "
        + sign(key.private_key, {**good, "aud": "someone-else"}, key.kid),
        "a wrong issuer": "Bearer "
        + sign(key.private_key, {**good, "iss": "https://evil.example"}, key.kid),
        "no exp": "Bearer "
        + sign(key.private_key, {k: v for k, v in good.items() if k != "exp"}, key.kid),
        "no aud": "Bearer "
        + sign(key.private_key, {k: v for k, v in good.items() if k != "aud"}, key.kid),
        "no sub": "Bearer "
        + sign(key.private_key, {k: v for k, v in good.items() if k != "sub"}, key.kid),
        "a user that does not exist": "Bearer "
        + sign(key.private_key, {**good, "sub": "no-such-user"}, key.kid),
    }

    answers = {}
    for case, authorization in forged.items():
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await users.get("/users/me", headers=headers)
        answers[case] = (
            response.status_code,
            response.headers.get("www-authenticate", "").split(" ")[0],
        )

    assert {case: a for case, a in answers.items() if a != (401, "Bearer")} == {}
    # and the genuine token still works, so the 401s above are about the forgeries
    ok = await users.get("/users/me", headers={"Authorization": f"Bearer {valid}"})
    assert ok.status_code == 200
