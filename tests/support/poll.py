"""Wait for a condition with a deadline instead of sleeping for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


async def stays(
    probe: Callable[[], Awaitable[T]], *, seconds: float = 1.0, interval: float = 0.05
) -> T:
    """Check that ``probe`` keeps returning a truthy value for ``seconds`` (used to show
    that something does NOT happen, e.g. no second event is published)."""
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        assert value, f"condition stopped holding: {value!r}"
        if time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
