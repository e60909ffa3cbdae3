"""The recommender's one wiring point."""

from __future__ import annotations

from typing import Any, cast

from events.runtime import Runtime
from recommender.config import RPC_QUEUE, Settings
from recommender.handlers import SUBSCRIPTIONS, Context, recommend
from recommender.store import RecommenderStore


async def bootstrap(runtime: Runtime) -> None:
    settings = cast(Settings, runtime.settings)
    store = RecommenderStore(
        runtime.mongo,
        settings.database_name,
        neighbours=settings.recommender_neighbours,
        history=settings.recommender_history,
    )
    await store.setup()
    ctx = Context(store=store)
    runtime.subscribe(SUBSCRIPTIONS, ctx)

    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        return await recommend(request, ctx)

    runtime.serve_rpc(RPC_QUEUE, answer)
