"""python -m orders: the HTTP API and the payment-result consumer in one process."""

from events.web import run_http
from orders.api import create_app
from orders.config import Settings

if __name__ == "__main__":
    run_http(
        Settings,
        create_app,
        port=lambda settings: settings.orders_port,
        description=(
            "eventshop orders: catalog, orders and recommendations over HTTP (ORDERS_PORT, "
            "default 8002); follows payment.completed/payment.failed from its queue 'orders'. "
            "Own variables: ORDERS_PORT, USERS_URL, JWT_ISSUER, JWT_AUDIENCE, "
            "JWKS_REFRESH_SECONDS, RECOMMENDER_TIMEOUT, CATALOG_PATH."
        ),
    )
