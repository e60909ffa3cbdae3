"""The one place the payments worker is wired: store, provider, outbox relay, subscriptions."""

from __future__ import annotations

from typing import cast

from events.runtime import Runtime
from payments.config import Settings
from payments.handlers import SUBSCRIPTIONS, Context
from payments.provider import SimulatedProvider
from payments.store import PaymentsStore


async def bootstrap(runtime: Runtime) -> None:
    settings = cast(Settings, runtime.settings)
    store = PaymentsStore(runtime.mongo, settings.database_name, source="/payments")
    await store.setup()
    # A real provider would be chosen here (from settings) behind the same interface.
    provider = SimulatedProvider(
        store.db["simulated_provider"], latency=settings.payment_latency_ms / 1000
    )
    runtime.relay(store.outbox)
    runtime.subscribe(SUBSCRIPTIONS, Context(store=store, provider=provider))
