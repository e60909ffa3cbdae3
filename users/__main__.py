"""``python -m users``: the identity service on USERS_PORT (default 8001)."""

from __future__ import annotations

import sys

from events.web import run_http
from users.api import create_app
from users.config import Settings
from users.tokens import UnusableKey


def main() -> None:
    try:
        run_http(
            Settings,
            create_app,
            port=lambda settings: settings.users_port,
            description=(
                "eventshop users: registration, login and access tokens. Own settings: "
                "USERS_PORT, JWT_PRIVATE_KEY_FILE, ACCESS_TOKEN_TTL_SECONDS, ARGON2_TIME_COST, "
                "ARGON2_MEMORY_KIB, ARGON2_PARALLELISM, LOGIN_MAX_FAILURES, "
                "LOGIN_FAILURE_WINDOW_SECONDS, MAX_BODY_BYTES."
            ),
        )
    except UnusableKey as exc:
        print(f"users: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
