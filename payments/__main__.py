"""``python -m payments``: charge every new order once and publish the outcome."""

from __future__ import annotations

from events.runtime import run_worker
from payments.bootstrap import bootstrap
from payments.config import Settings


def main() -> None:
    run_worker(
        Settings,
        bootstrap,
        description=(
            "Consumes order.created from the 'payments' queue, charges the order through the "
            "payment provider (simulated: card_ok, card_declined, card_flaky) once per order, "
            "and publishes payment.completed or payment.failed. Own setting: "
            "PAYMENT_LATENCY_MS (simulated provider latency, default 0)."
        ),
    )


if __name__ == "__main__":
    main()
