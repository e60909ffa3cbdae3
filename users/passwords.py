"""Argon2id password hashing, kept off the event loop.

Hashing costs tens of milliseconds of CPU and tens of MiB of memory on purpose; done on
the loop it would stall every other request and the broker heartbeat during a burst of
logins. Each hash runs in a worker thread, and at most one per CPU at a time, so a burst
queues up instead of taking all the memory and every thread of the default executor
(which the loop also needs, e.g. for DNS lookups when the broker reconnects).
"""

from __future__ import annotations

import asyncio
import os
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, concurrency: int | None = None
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 1)
        self._dummy: str | None = None

    async def prepare(self) -> None:
        """Make the dummy hash at start-up, so the first unknown-user login is not slower."""
        await self._dummy_hash()

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, _encode(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches. With no hash (unknown user), a dummy hash made with
        the same parameters is checked instead, so that the answer takes as long."""
        if password_hash is None:
            password_hash = await self._dummy_hash()
            await self._check(password_hash, password)
            return False
        return await self._check(password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    async def _check(self, password_hash: str, password: str) -> bool:
        async with self._slots:
            try:
                return await asyncio.to_thread(
                    self._hasher.verify, password_hash, _encode(password)
                )
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        return self._dummy


def _encode(password: str) -> bytes:
    # A lone surrogate (possible in JSON or form input) cannot be UTF-8 encoded strictly;
    # "surrogatepass" keeps such input deterministic instead of raising.
    return password.encode("utf-8", "surrogatepass")
