"""A narrated journey through a running eventshop (start it first with ``scripts/run``).

Registers a user, logs in, browses the catalog, places three orders (one that pays, one
declined, one with a flaky card that pays after retries), waits for the payment results,
shows the mails that arrived, asks for recommendations and prints the analytics report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

console = Console()


def say(text: str) -> None:
    console.print(f"\n[bold cyan]▶ {text}[/]")


def show(response: httpx.Response) -> Any:
    console.print(
        f"  [dim]{response.request.method} {response.request.url.path}[/] -> {response.status_code}"
    )
    body = response.json()
    console.print_json(data=body)
    return body


def wait_for_order(client: httpx.Client, orders: str, token: str, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        order: dict[str, Any] = client.get(
            f"{orders}/orders/{order_id}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        if order["status"] != "pending" or time.monotonic() > deadline:
            return order
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", default=os.environ.get("USERS_URL", "http://localhost:8001"))
    parser.add_argument(
        "--orders",
        default=f"http://localhost:{os.environ.get('ORDERS_PORT', '8002')}",
    )
    parser.add_argument(
        "--mail-dir", default=os.path.join(os.environ.get("EVENTSHOP_VAR", "var"), "mail")
    )
    args = parser.parse_args()
    name = f"demo_{uuid.uuid4().hex[:6]}"
    password = "a long demo password"  # noqa: S105 - a demo account
    with httpx.Client(timeout=10) as client:
        try:
            client.get(f"{args.users}/health/ready").raise_for_status()
            client.get(f"{args.orders}/health/ready").raise_for_status()
        except httpx.HTTPError as exc:
            console.print(
                f"[red]eventshop is not running or not ready ({exc}). Start it with scripts/run.[/]"
            )
            return 1

        say(f"Register {name}")
        show(
            client.post(
                f"{args.users}/users",
                json={"username": name, "email": f"{name}@example.com", "password": password},
            )
        )

        say("Log in (OAuth2 password form) and get a JWT")
        token = show(
            client.post(f"{args.users}/auth/token", data={"username": name, "password": password})
        )["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        say("Who am I?")
        show(client.get(f"{args.users}/users/me", headers=auth))

        say("Browse the catalog")
        products = client.get(f"{args.orders}/products").json()
        for p in products[:6]:
            console.print(
                f"  {p['id']:<14} {p['name']:<32} {p['price']:>8} {p['currency']}"
                f"  ({p['category']})"
            )
        console.print(f"  … {len(products)} products")

        placed = []
        for method, items in (
            ("card_ok", [products[0], products[1]]),
            ("card_declined", [products[2]]),
            ("card_flaky", [products[3]]),
        ):
            say(f"Order with payment_method={method}")
            body = {
                "items": [{"product_id": p["id"], "quantity": 1} for p in items],
                "payment_method": method,
            }
            order = show(
                client.post(
                    f"{args.orders}/orders",
                    json=body,
                    headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
                )
            )
            placed.append((method, order["id"]))

        say("Wait for the payment results (the flaky card pays after the bus's retries)")
        for method, order_id in placed:
            order = wait_for_order(client, args.orders, token, order_id)
            console.print(f"  {method:<14} order {order_id} -> [bold]{order['status']}[/]")

        say("Mails that arrived")
        folder = Path(args.mail_dir)
        deadline = time.monotonic() + 30
        mails: list[Path] = []
        while time.monotonic() < deadline:
            mails = [
                m for m in sorted(folder.glob("*.eml")) if name in m.read_text(errors="replace")
            ]
            if len(mails) >= 5:
                break
            time.sleep(0.5)
        if not folder.exists():
            console.print(
                "  (SMTP_HOST points elsewhere: look in your mail server, e.g. Mailpit on :8025)"
            )
        for mail in mails:
            subject = next(
                (
                    line
                    for line in mail.read_text(errors="replace").splitlines()
                    if line.startswith("Subject:")
                ),
                "",
            )
            console.print(f"  {mail.name}: {subject}")

        say("Recommendations for the user")
        show(client.get(f"{args.orders}/recommendations", headers=auth))

    say("Analytics report")
    subprocess.run([sys.executable, "-m", "analytics", "report", "--days", "1"], check=False)
    console.print("\n[bold green]Journey complete.[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
