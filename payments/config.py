"""The payments worker's settings: the shared environment plus the simulated provider's."""

from __future__ import annotations

from pydantic import Field

from events.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = Field(default="payments", exclude=True)

    #: How long the simulated provider takes to answer (``PAYMENT_LATENCY_MS``), to watch
    #: the service with a slow provider; 0 answers at once.
    payment_latency_ms: int = Field(default=0, ge=0, le=60_000)
