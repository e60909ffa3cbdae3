"""Run a real service in the test process: its Runtime against the real broker and
database, exactly as ``python -m <service>`` wires it (e2e tests start real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from events.runtime import Bootstrap, Runtime
from events.settings import ServiceSettings


@asynccontextmanager
async def running_worker(settings: ServiceSettings, bootstrap: Bootstrap) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings)
    await runtime.connect(attempts=5)
    await bootstrap(runtime)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started (consumers, outbox relay) and a client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
