"""``python -m notifier``: e-mail customers about their account, orders and payments."""

from __future__ import annotations

from events.runtime import run_worker
from notifier.bootstrap import bootstrap
from notifier.config import Settings


def main() -> None:
    run_worker(
        Settings,
        bootstrap,
        description=(
            "Consumes user.registered, order.created, payment.completed and payment.failed "
            "from the 'notifier' queue and sends one e-mail per notice over SMTP (welcome, "
            "order confirmation, receipt, payment failure). Own settings: SMTP_HOST "
            "(localhost), SMTP_PORT (1025), SMTP_FROM (shop@localhost), SMTP_USERNAME, "
            "SMTP_PASSWORD, SMTP_STARTTLS, SMTP_TLS, SMTP_TIMEOUT (10 s)."
        ),
    )


if __name__ == "__main__":
    main()
