"""The users API's request rules and its protective plumbing, without I/O: what a
registration body must look like, 422s that never echo a password, and the body limit."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from events.web import BodyLimit
from users.api import NewUser


def body(**overrides: object) -> dict[str, object]:
    return {
        "username": "alice",
        "email": "alice@example.com",
        "password": "s3cret-pass",
    } | overrides


@pytest.mark.parametrize("username", ["abc", "a" * 32, "Alice", "a.b-c_d", "007"])
def test_usernames_of_3_to_32_allowed_characters_are_accepted(username: str) -> None:
    assert NewUser.model_validate(body(username=username)).username == username


@pytest.mark.parametrize(
    "username", ["ab", "a" * 33, "al ice", "alice!", "ålice", "al\u0000ice", "", "al\ud800ce"]
)
def test_other_usernames_are_refused(username: str) -> None:
    with pytest.raises(ValidationError, match="username"):
        NewUser.model_validate(body(username=username))


def test_the_email_is_normalised_to_lowercase() -> None:
    assert NewUser.model_validate(body(email="Alice.B@Example.COM")).email == "alice.b@example.com"


@pytest.mark.parametrize(
    "email",
    ["alice", "alice@", "@example.com", "alice@localhost", "a b@example.com", "a\ud800@x.io"],
)
def test_emails_without_real_syntax_are_refused(email: str) -> None:
    with pytest.raises(ValidationError, match="email"):
        NewUser.model_validate(body(email=email))


@pytest.mark.parametrize("password", ["1234567", "x" * 129, "pass\ud800word"])
def test_passwords_outside_8_to_128_characters_or_not_text_are_refused(password: str) -> None:
    with pytest.raises(ValidationError, match="password"):
        NewUser.model_validate(body(password=password))


@pytest.mark.parametrize("password", ["12345678", "x" * 128, "пароль-пароль", "🔑" * 8])
def test_passwords_of_8_to_128_characters_are_accepted(password: str) -> None:
    assert NewUser.model_validate(body(password=password)).password == password


def _echo_app(max_bytes: int) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(payload: dict[str, str]) -> dict[str, int]:
        return {"keys": len(payload)}

    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    return app


async def _post(app: FastAPI, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/echo", **kwargs)  # type: ignore[arg-type]


async def test_a_body_within_the_limit_passes() -> None:
    response = await _post(_echo_app(1024), json={"a": "b"})
    assert response.status_code == 200


async def test_an_announced_oversized_body_is_refused_with_413() -> None:
    response = await _post(_echo_app(1024), content=b"{" + b" " * 2000 + b"}")
    assert response.status_code == 413
    assert "limit 1024 bytes" in response.json()["detail"]


async def test_a_streamed_oversized_body_is_refused_with_413() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 500

    response = await _post(
        _echo_app(1024), content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
