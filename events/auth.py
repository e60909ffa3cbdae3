"""Access-token verification shared by every service that accepts the users service's
JWTs. Signing lives in ``users`` alone; here is only what a verifier needs: a fixed
algorithm allow-list, required ``exp``/``aud``/``iss``, keys looked up by ``kid``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

log = logging.getLogger("events.auth")

#: Never taken from the token header: ``alg=none`` and HMAC-with-public-key are refused.
ALGORITHMS = ["EdDSA"]
DEFAULT_ISSUER = "eventshop-users"
DEFAULT_AUDIENCE = "eventshop"


class InvalidToken(Exception):
    """The token cannot be trusted; the reason is for logs, never for the client."""


class UnknownKey(InvalidToken):
    def __init__(self, kid: str | None) -> None:
        super().__init__(f"unknown key id {kid!r}")
        self.kid = kid


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Any]:
    """``kid -> public key`` for the OKP/RSA signing keys of a JWKS document."""
    keys: dict[str, Any] = {}
    for entry in jwks.get("keys", []):
        if entry.get("use", "sig") != "sig" or "kid" not in entry:
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry).key
        except (jwt.PyJWTError, ValueError, TypeError):
            log.warning("ignoring a JWKS key that does not parse: kid=%s", entry.get("kid"))
    return keys


def verify(token: str, keys: Mapping[str, Any], *, issuer: str, audience: str) -> Principal:
    """Verify signature, expiry, audience and issuer; return who the token is for."""
    return _verify(token, keys, issuer=issuer, audience=audience)[0]


def _verify(
    token: str, keys: Mapping[str, Any], *, issuer: str, audience: str
) -> tuple[Principal, float]:
    """:func:`verify`, also returning the token's ``exp`` (epoch seconds)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"malformed token: {exc}") from exc
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken(f"algorithm {header.get('alg')!r} is not allowed")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise UnknownKey(kid if isinstance(kid, str) else None)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            leeway=5,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    sub, username = claims.get("sub"), claims.get("username")
    if not isinstance(sub, str) or not isinstance(username, str):
        raise InvalidToken("sub and username must be strings")
    return Principal(user_id=sub, username=username), float(claims["exp"])


class JwksCache:
    """The users service's public keys, fetched from its JWKS URL and cached. An unknown
    ``kid`` triggers a refetch (at most once per ``min_refresh`` seconds), so key rotation
    works; while the users service is down, the keys already known keep working.

    Tokens that verified are remembered until their ``exp`` (at most ``max_tokens`` of
    them): a client sends the same token with every request, and the EdDSA check plus
    PyJWT's parsing was a fifth of a ``GET /orders/{id}`` (docs/benchmarks.md). A token is
    immutable, so the cached answer is the one a new check would give until it expires;
    an expired entry is checked again (and refused) like any other token.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refresh: float = 10.0,
        timeout: float = 3.0,
        max_tokens: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.clock = clock
        self.keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._verified: dict[tuple[str, str, str], tuple[Principal, float]] = {}

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.min_refresh:
                return
            self._fetched_at = time.monotonic()
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                    fetched = keys_from_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("could not fetch JWKS from %s: %s", self.url, exc)
                return
            self.keys.update(fetched)

    async def verify(self, token: str, *, issuer: str, audience: str) -> Principal:
        cache_key = (token, issuer, audience)
        if (hit := self._verified.get(cache_key)) is not None:
            if self.clock() < hit[1]:
                return hit[0]
            del self._verified[cache_key]
        try:
            principal, exp = _verify(token, self.keys, issuer=issuer, audience=audience)
        except UnknownKey:
            await self.refresh()
            principal, exp = _verify(token, self.keys, issuer=issuer, audience=audience)
        self._remember(cache_key, principal, exp)
        return principal

    @property
    def remembered(self) -> int:
        """How many verified tokens are cached now."""
        return len(self._verified)

    def _remember(self, key: tuple[str, str, str], principal: Principal, exp: float) -> None:
        if len(self._verified) >= self.max_tokens:
            now = self.clock()
            for stale in [k for k, (_, e) in self._verified.items() if e <= now]:
                del self._verified[stale]
            while len(self._verified) >= self.max_tokens:  # oldest first (insertion order)
                del self._verified[next(iter(self._verified))]
        self._verified[key] = (principal, exp)
