"""The orders service's settings: the shared environment plus its own (contract §1)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from events.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from events.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = Field(default="orders", exclude=True)

    orders_port: int = Field(default=8002, ge=1, le=65535)
    #: Where the users service serves ``/.well-known/jwks.json``.
    users_url: str = "http://localhost:8001"
    #: What a valid access token must carry in ``iss`` and ``aud``.
    jwt_issuer: str = DEFAULT_ISSUER
    jwt_audience: str = DEFAULT_AUDIENCE
    #: A token with an unknown ``kid`` refetches the JWKS at most this often.
    jwks_refresh_seconds: float = Field(default=10.0, ge=0)
    #: How long ``GET /recommendations`` waits for the recommender before falling back.
    recommender_timeout: float = Field(default=2.0, gt=0, le=30)
    #: The product list loaded at start; the one shipped with the package by default.
    catalog_path: Path | None = None

    @property
    def jwks_url(self) -> str:
        return f"{self.users_url.rstrip('/')}/.well-known/jwks.json"
