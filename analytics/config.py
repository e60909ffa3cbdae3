"""The analytics worker's settings: the shared environment, nothing of its own."""

from __future__ import annotations

from pydantic import Field

from events.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = Field(default="analytics", exclude=True)
