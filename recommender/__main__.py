"""``python -m recommender``: learn from paid orders, answer on ``recommender.rpc``."""

from __future__ import annotations

from events.runtime import run_worker
from recommender.bootstrap import bootstrap
from recommender.config import Settings


def main() -> None:
    run_worker(
        Settings,
        bootstrap,
        description=(
            "Learns item-to-item co-purchase similarity from paid orders (order.created + "
            "payment.completed) and answers recommendation requests on the RabbitMQ queue "
            "recommender.rpc. Own settings: RECOMMENDER_NEIGHBOURS (similar items kept per "
            "item, default 50), RECOMMENDER_HISTORY (latest purchases that drive an answer, "
            "default 100)."
        ),
    )


if __name__ == "__main__":
    main()
