"""The users service's settings: the shared environment plus its own (contract §1)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from events.settings import ServiceSettings

#: OWASP's Argon2id minimum trades memory for passes: m=47104 KiB/t=1 ... m=7168 KiB/t=5,
#: i.e. roughly memory x passes >= 35840 KiB with at least 7 MiB per pass.
_OWASP_MIN_MEMORY_KIB = 7168
_OWASP_MIN_MEMORY_X_TIME = 35840


class Settings(ServiceSettings):
    service_name: str = Field(default="users", exclude=True)

    users_port: int = Field(default=8001, ge=1, le=65535)

    #: PEM file holding the Ed25519 private key that signs access tokens. When unset, the
    #: service generates a key once and keeps it in its own database, so that restarts and
    #: replicas agree; production deployments should mount a key (secret) instead.
    jwt_private_key_file: Path | None = None
    #: Lifetime of an access token (there are no refresh tokens: log in again).
    access_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)

    #: Argon2id cost. The defaults are argon2-cffi's (RFC 9106 "low memory" profile:
    #: t=3, 64 MiB, p=4), stronger than OWASP's minimum; anything weaker than OWASP's
    #: minimum is refused at start-up.
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65536, ge=_OWASP_MIN_MEMORY_KIB, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)

    #: After this many failed logins for one username within the window, answer 429.
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)

    #: Requests with a larger body are refused with 413 before anything parses them.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    @model_validator(mode="after")
    def _argon2_at_least_owasp(self) -> Settings:
        if self.argon2_memory_kib * self.argon2_time_cost < _OWASP_MIN_MEMORY_X_TIME:
            raise ValueError(
                "ARGON2_MEMORY_KIB x ARGON2_TIME_COST is below OWASP's minimum for Argon2id "
                f"({_OWASP_MIN_MEMORY_X_TIME} KiB, e.g. 19456 KiB with 2 passes)"
            )
        return self
