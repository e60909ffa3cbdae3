"""Login throttling: after N failed logins for one username within a window, refuse
further attempts for that username (429) until the oldest counted failure leaves the
window.

The failures live in MongoDB, so every replica counts the same ones. Within one process,
attempts for one username run one at a time (a burst of parallel guesses cannot all slip
past the check before the first failure is written); across R replicas at most R - 1
extra guesses can race through. A successful login clears the username's failures:
the limit is on *consecutive* failures, so a user who mistyped twice starts afresh.
While a username is locked, even the right password gets 429 — it is not checked, so a
lock-out cannot be used to test passwords.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from events.contracts import utcnow
from users.store import UsersStore


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after}s")
        self.retry_after = retry_after


class LoginThrottle:
    def __init__(self, store: UsersStore, *, max_failures: int, window: timedelta) -> None:
        self.store = store
        self.max_failures = max_failures
        self.window = window
        self._locks: dict[str, _Lock] = {}

    @asynccontextmanager
    async def attempt(self, username_key: str) -> AsyncIterator[None]:
        """Hold the username's turn; raise :class:`Throttled` when it is locked out."""
        async with self._turn(username_key):
            retry_after = await self.retry_after(username_key)
            if retry_after:
                raise Throttled(retry_after)
            yield

    async def retry_after(self, username_key: str, now: datetime | None = None) -> int:
        """Seconds until another attempt is allowed; 0 when it is allowed now."""
        now = now or utcnow()
        failures = await self.store.recent_login_failures(
            username_key, now - self.window, self.max_failures
        )
        if len(failures) < self.max_failures:
            return 0
        # Allowed again once the oldest of the last N failures leaves the window.
        unlock = failures[-1] + self.window
        return max(1, math.ceil((unlock - now).total_seconds()))

    async def failed(self, username_key: str) -> None:
        await self.store.add_login_failure(username_key, utcnow())

    async def succeeded(self, username_key: str) -> None:
        await self.store.clear_login_failures(username_key)

    @asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, _Lock())
        lock.users += 1
        try:
            async with lock.lock:
                yield
        finally:
            lock.users -= 1
            if lock.users == 0:
                del self._locks[key]


class _Lock:
    """A lock plus how many attempts hold or wait for it, so idle ones are dropped."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
