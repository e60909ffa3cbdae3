"""The analytics worker's one wiring point."""

from __future__ import annotations

from typing import cast

from analytics.config import Settings
from analytics.handlers import SUBSCRIPTIONS, Context
from analytics.store import AnalyticsStore
from events.runtime import Runtime


async def bootstrap(runtime: Runtime) -> None:
    settings = cast(Settings, runtime.settings)
    store = AnalyticsStore(runtime.mongo, settings.database_name)
    await store.setup()
    runtime.subscribe(SUBSCRIPTIONS, Context(store=store))
