"""The notifier's settings: the shared environment plus its mail relay."""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import parseaddr
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from events.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = Field(default="notifier", exclude=True)

    smtp_host: str = "localhost"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    #: ``shop@example.com`` or ``eventshop <shop@example.com>``.
    smtp_from: str = "shop@localhost"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    #: Upgrade the connection with STARTTLS (typically port 587).
    smtp_starttls: bool = False
    #: Implicit TLS from the first byte (typically port 465).
    smtp_tls: bool = False
    #: Budget in seconds for one whole SMTP conversation (connect to QUIT).
    smtp_timeout: float = Field(default=10.0, gt=0, le=300)

    @field_validator("smtp_from")
    @classmethod
    def _address(cls, value: str) -> str:
        _, addr = parseaddr(value)
        try:
            Address(addr_spec=addr)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"SMTP_FROM must be an e-mail address, got {value!r}") from exc
        if "@" not in addr:
            raise ValueError(f"SMTP_FROM must be an e-mail address, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Self:
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("set SMTP_TLS (implicit TLS) or SMTP_STARTTLS, not both")
        return self

    @property
    def send_lease_seconds(self) -> float:
        """How long one delivery owns a notice before another may take it over: longer than
        any send can take (the whole conversation is bounded by ``smtp_timeout``)."""
        return self.smtp_timeout + 5.0
