"""The one wiring point of the users service."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import cast

from events.runtime import Runtime
from users.accounts import Accounts
from users.config import Settings
from users.passwords import Passwords
from users.store import UsersStore
from users.throttle import LoginThrottle
from users.tokens import SigningKey, Tokens

log = logging.getLogger("users.bootstrap")


async def bootstrap(runtime: Runtime, *, signing_key: SigningKey | None = None) -> Accounts:
    """Wire the service; ``signing_key`` is the one from ``JWT_PRIVATE_KEY_FILE``, if any."""
    settings = cast(Settings, runtime.settings)
    window = timedelta(seconds=settings.login_failure_window_seconds)
    store = UsersStore(runtime.mongo, settings.database_name, failure_window=window)
    await store.setup()
    runtime.relay(store.outbox)

    passwords = Passwords(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    await passwords.prepare()
    if signing_key is not None:
        log.info(
            "signing tokens with the key from JWT_PRIVATE_KEY_FILE", extra={"kid": signing_key.kid}
        )
    key = signing_key or await stored_signing_key(store)
    return Accounts(
        store=store,
        passwords=passwords,
        tokens=Tokens(key, ttl=timedelta(seconds=settings.access_token_ttl_seconds)),
        throttle=LoginThrottle(store, max_failures=settings.login_max_failures, window=window),
    )


async def stored_signing_key(store: UsersStore) -> SigningKey:
    """The key kept in the database, made by whichever replica got there first."""
    candidate = SigningKey.generate()
    pem = await store.signing_key_pem(candidate.private_pem(), candidate.kid)
    key = SigningKey.from_pem(pem.encode(), origin="the stored signing key")
    log.info("signing tokens with the key kept in the database", extra={"kid": key.kid})
    return key
