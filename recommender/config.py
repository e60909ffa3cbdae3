"""The recommender's settings: the shared environment plus its own tuning knobs."""

from __future__ import annotations

from pydantic import Field

from events.settings import ServiceSettings

#: The queue ``orders`` sends its requests to (contract §3, RPC).
RPC_QUEUE = "recommender.rpc"


class Settings(ServiceSettings):
    service_name: str = Field(default="recommender", exclude=True)

    #: ``RECOMMENDER_NEIGHBOURS``: how many similar items are kept per item.
    recommender_neighbours: int = Field(default=50, ge=1, le=1000)
    #: ``RECOMMENDER_HISTORY``: how many of a customer's latest purchases drive an answer
    #: (older ones are still never recommended back).
    recommender_history: int = Field(default=100, ge=1, le=10_000)
