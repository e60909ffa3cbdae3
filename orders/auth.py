"""Who is calling: the users service's access tokens, verified here with its public keys.

The keys come from the users service's JWKS, fetched on the first token with an unknown
``kid`` (so orders starts without users being up) and cached; a rotated key is picked up
the same way, and while users is down the keys already known keep working.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from events.auth import InvalidToken, JwksCache, Principal

log = logging.getLogger("orders.auth")

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="An access token from the users service: POST /auth/token there.",
)


class Authenticator:
    def __init__(
        self, jwks_url: str, *, issuer: str, audience: str, min_refresh: float = 10.0
    ) -> None:
        self.jwks = JwksCache(jwks_url, min_refresh=min_refresh)
        self.issuer = issuer
        self.audience = audience

    async def principal(self, token: str) -> Principal:
        """Raises :class:`InvalidToken` for any token that cannot be trusted."""
        try:
            return await self.jwks.verify(token, issuer=self.issuer, audience=self.audience)
        except InvalidToken:
            raise
        except (ValueError, TypeError) as exc:
            # A token crafted to trip the JWT library is still just an invalid token.
            raise InvalidToken(f"unusable token: {exc!r}") from exc


def _unauthorized(detail: str, *, error: str | None = None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge}
    )


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <access token>'")
    authenticator: Authenticator = request.app.state.authenticator
    try:
        return await authenticator.principal(credentials.credentials)
    except InvalidToken as exc:
        log.info("rejected an access token: %s", exc)
        raise _unauthorized(
            "invalid or expired access token; get a new one from the users service",
            error="invalid_token",
        ) from None


CurrentUser = Annotated[Principal, Depends(current_user)]
