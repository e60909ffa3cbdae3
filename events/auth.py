"""Access-token verification shared by every service that accepts the users service's
JWTs. Signing lives in ``users`` alone; here is only what a verifier needs: a fixed
algorithm allow-list, required ``exp``/``aud``/``iss``, keys looked up by ``kid``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
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
    return Principal(user_id=sub, username=username)


class JwksCache:
    """The users service's public keys, fetched from its JWKS URL and cached. An unknown
    ``kid`` triggers a refetch (at most once per ``min_refresh`` seconds), so key rotation
    works; while the users service is down, the keys already known keep working."""

    def __init__(self, url: str, *, min_refresh: float = 10.0, timeout: float = 3.0) -> None:
        self.url = url
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

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
        try:
            return verify(token, self.keys, issuer=issuer, audience=audience)
        except UnknownKey:
            await self.refresh()
            return verify(token, self.keys, issuer=issuer, audience=audience)
