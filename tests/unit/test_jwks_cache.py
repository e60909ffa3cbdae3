"""The verifier's cache of tokens that verified: it answers only what a fresh check
would, and never past the token's ``exp``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
import pytest

from events import auth
from events.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER, InvalidToken, JwksCache, keys_from_jwks
from users.tokens import SigningKey, Tokens


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the JWT library was asked to check, in order."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


def cache_for(issuer: Tokens, clock: Clock, **kwargs: Any) -> JwksCache:
    cache = JwksCache("http://users.invalid/.well-known/jwks.json", clock=clock, **kwargs)
    cache.keys.update(keys_from_jwks(issuer.jwks()))
    return cache


async def verify(cache: JwksCache, token: str, audience: str = DEFAULT_AUDIENCE) -> auth.Principal:
    return await cache.verify(token, issuer=DEFAULT_ISSUER, audience=audience)


async def test_the_same_token_is_checked_once(decodes: list[str]) -> None:
    issuer = Tokens(SigningKey.generate(), ttl=timedelta(minutes=15))
    token = issuer.issue(user_id="u-1", username="alice").access_token
    cache = cache_for(issuer, Clock(0))

    first = await verify(cache, token)
    second = await verify(cache, token)

    assert first == second == auth.Principal(user_id="u-1", username="alice")
    assert decodes == [token]


async def test_a_cached_token_is_checked_again_once_its_exp_has_passed(decodes: list[str]) -> None:
    issuer = Tokens(SigningKey.generate(), ttl=timedelta(minutes=15))
    token = issuer.issue(user_id="u-1", username="alice").access_token
    # read without jwt.decode, which the fixture counts
    unverified = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
    exp = unverified["payload"]["exp"]
    clock = Clock(exp - 1)
    cache = cache_for(issuer, clock)
    await verify(cache, token)

    clock.now = exp
    await verify(cache, token)

    assert decodes == [token, token]


async def test_a_token_that_failed_is_not_remembered(decodes: list[str]) -> None:
    issuer = Tokens(SigningKey.generate(), ttl=timedelta(minutes=15))
    token = issuer.issue(user_id="u-1", username="alice").access_token
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{signature[:-4]}AAAA"
    cache = cache_for(issuer, Clock(0))

    for _ in range(2):
        with pytest.raises(InvalidToken):
            await verify(cache, forged)

    assert decodes == [forged, forged]
    assert cache.remembered == 0


async def test_a_cached_token_is_not_accepted_for_another_audience() -> None:
    issuer = Tokens(SigningKey.generate(), ttl=timedelta(minutes=15))
    token = issuer.issue(user_id="u-1", username="alice").access_token
    cache = cache_for(issuer, Clock(0))
    await verify(cache, token)

    with pytest.raises(InvalidToken):
        await verify(cache, token, audience="some-other-service")


async def test_the_cache_holds_at_most_max_tokens() -> None:
    issuer = Tokens(SigningKey.generate(), ttl=timedelta(minutes=15))
    cache = cache_for(issuer, Clock(0), max_tokens=3)
    tokens = [issuer.issue(user_id=f"u-{i}", username=f"user{i}").access_token for i in range(5)]

    for token in tokens:
        await verify(cache, token)

    assert cache.remembered == 3
    # the newest stay; the oldest were let go and are checked again when they come back
    assert (await verify(cache, tokens[-1])).user_id == "u-4"
    assert (await verify(cache, tokens[0])).user_id == "u-0"
