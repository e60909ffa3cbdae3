"""The one wiring point of the orders service."""

from __future__ import annotations

from typing import cast

from events.runtime import Runtime
from orders.catalog import load_catalog
from orders.config import Settings
from orders.handlers import SUBSCRIPTIONS, Context
from orders.store import OrdersStore


async def wire(runtime: Runtime) -> Context:
    """Set the database up, load the catalog, and register the outbox relay, the payment
    consumer and the recommender RPC client; returns what the API's routes use."""
    settings = cast(Settings, runtime.settings)
    store = OrdersStore(runtime.mongo, settings.database_name, source="/orders")
    await store.setup()
    await store.load_catalog(load_catalog(settings.catalog_path))
    runtime.relay(store.outbox)
    ctx = Context(
        store=store,
        rpc=runtime.rpc_client(),
        recommender_timeout=settings.recommender_timeout,
    )
    runtime.subscribe(SUBSCRIPTIONS, ctx)
    return ctx


async def bootstrap(runtime: Runtime) -> None:
    """The kit's bootstrap signature: the consumer and relay without the HTTP API."""
    await wire(runtime)
