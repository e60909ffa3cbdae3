"""Settings shared by every service. Each service subclasses :class:`ServiceSettings`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """The environment every eventshop process reads (contract §1).

    Only environment variables (and an optional ``.env``) configure a service; nothing is
    read at import time: build one with ``Settings()`` at start-up, or pass values in tests.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    service_name: str = Field(default="service", exclude=True)

    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    mongodb_url: str = "mongodb://localhost:27017/"
    mongodb_db_prefix: str = ""
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    #: How many unacknowledged messages a consumer holds (and handles concurrently).
    prefetch: int = Field(default=16, ge=1, le=1000)
    #: Delays in seconds before the 2nd, 3rd, ... attempt of a failing handler; the message
    #: is parked in ``<service>.dlq`` after ``len(retry_delays) + 1`` attempts.
    retry_delays: Annotated[tuple[float, ...], NoDecode] = (1.0, 5.0, 30.0)
    #: Opt-in Prometheus endpoint for workers (HTTP services serve ``/metrics`` anyway).
    metrics_port: int | None = None
    #: How often the outbox relay looks for pending events when nothing woke it.
    outbox_poll_seconds: float = Field(default=1.0, gt=0)

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(part) for part in value.replace(",", " ").split())
        return value

    @property
    def database_name(self) -> str:
        return f"{self.mongodb_db_prefix}{self.service_name}"
