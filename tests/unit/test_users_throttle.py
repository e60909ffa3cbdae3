"""Login throttling rules, with an in-memory stand-in for the failures collection (the
integration tests run the same rules against MongoDB)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from events.contracts import utcnow
from users.store import UsersStore
from users.throttle import LoginThrottle, Throttled

WINDOW = timedelta(minutes=15)


class FakeFailures:
    def __init__(self) -> None:
        self.failures: list[tuple[str, datetime]] = []

    async def add_login_failure(self, username_key: str, at: datetime) -> None:
        await asyncio.sleep(0)  # a real store yields to the loop here
        self.failures.append((username_key, at))

    async def recent_login_failures(
        self, username_key: str, since: datetime, limit: int
    ) -> list[datetime]:
        await asyncio.sleep(0)
        times = sorted(
            (at for key, at in self.failures if key == username_key and at > since), reverse=True
        )
        return times[:limit]

    async def clear_login_failures(self, username_key: str) -> None:
        self.failures = [(k, at) for k, at in self.failures if k != username_key]


def throttle(store: Any) -> LoginThrottle:
    return LoginThrottle(cast(UsersStore, store), max_failures=5, window=WINDOW)


async def test_four_failures_still_allow_an_attempt() -> None:
    store = FakeFailures()
    now = utcnow()
    store.failures = [("alice", now - timedelta(minutes=i)) for i in range(4)]

    assert await throttle(store).retry_after("alice", now) == 0


async def test_five_failures_lock_until_the_oldest_leaves_the_window() -> None:
    store = FakeFailures()
    now = utcnow()
    store.failures = [("alice", now - timedelta(minutes=m)) for m in (1, 2, 3, 4, 10)]

    # the failure 10 minutes ago stops counting in 5 minutes
    assert await throttle(store).retry_after("alice", now) == 300


async def test_failures_older_than_the_window_do_not_count() -> None:
    store = FakeFailures()
    now = utcnow()
    store.failures = [("alice", now - timedelta(minutes=16 + i)) for i in range(10)]

    assert await throttle(store).retry_after("alice", now) == 0


async def test_failures_of_one_username_do_not_lock_another() -> None:
    store = FakeFailures()
    now = utcnow()
    store.failures = [("mallory", now) for _ in range(5)]

    assert await throttle(store).retry_after("alice", now) == 0


async def test_a_locked_username_is_refused_before_anything_is_checked() -> None:
    store = FakeFailures()
    store.failures = [("alice", utcnow()) for _ in range(5)]

    with pytest.raises(Throttled) as refused:
        async with throttle(store).attempt("alice"):
            pytest.fail("a locked-out attempt must not run")

    assert 0 < refused.value.retry_after <= 900


async def test_a_burst_of_parallel_guesses_gets_no_more_than_the_limit() -> None:
    store = FakeFailures()
    guard = throttle(store)
    checked = 0

    async def guess() -> str:
        nonlocal checked
        try:
            async with guard.attempt("alice"):
                checked += 1
                await guard.failed("alice")
                return "401"
        except Throttled:
            return "429"

    answers = await asyncio.gather(*(guess() for _ in range(12)))

    assert sorted(answers) == ["401"] * 5 + ["429"] * 7
    assert checked == 5
    assert guard._locks == {}, "idle per-username locks are dropped"


async def test_a_success_clears_the_failures() -> None:
    store = FakeFailures()
    guard = throttle(store)
    store.failures = [("alice", utcnow()) for _ in range(4)]

    await guard.succeeded("alice")

    assert await guard.retry_after("alice") == 0
    assert store.failures == []
