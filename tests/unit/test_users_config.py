"""The users service's settings: contract defaults, and no weaker hashing than OWASP's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from users.config import Settings


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USERS_PORT", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.users_port == 8001
    assert settings.database_name == f"{settings.mongodb_db_prefix}users"
    assert (settings.login_max_failures, settings.login_failure_window_seconds) == (5, 900)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERS_PORT", "9001")
    monkeypatch.setenv("MONGODB_DB_PREFIX", "shop_")

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.users_port == 9001
    assert settings.database_name == "shop_users"


def test_owasp_minimum_argon2_parameters_are_accepted() -> None:
    Settings(argon2_memory_kib=19456, argon2_time_cost=2, argon2_parallelism=1)


def test_argon2_parameters_weaker_than_owasp_are_refused() -> None:
    with pytest.raises(ValidationError, match="OWASP"):
        Settings(argon2_memory_kib=19456, argon2_time_cost=1)
    with pytest.raises(ValidationError, match="argon2_memory_kib"):
        Settings(argon2_memory_kib=4096, argon2_time_cost=10)
