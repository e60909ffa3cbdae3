"""The whole journey through real processes: register -> token -> order -> paid -> mails
-> analytics -> recommendations; the declined and flaky paths; privacy between users."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import httpx
import pytest

from tests.support.poll import eventually
from tests.support.shop import Shop
from tests.support.smtp import SmtpServer
from tests.support.system import ROOT, System

pytestmark = pytest.mark.e2e


async def test_customer_journey_from_registration_to_recommendations(
    system: System, smtp: SmtpServer
) -> None:
    system.start()
    await system.ready()
    shop = Shop(system.users_url, system.orders_url)
    try:
        # given two registered customers and a catalog
        alice = await shop.register("alice")
        bob = await shop.register("bob")
        products = await shop.products()
        assert len(products) >= 10
        p1, p2, p3, p4 = (p["id"] for p in products[:4])

        # when alice orders with a good card, a declined card and a flaky card
        paid = await shop.order(alice, [(p1, 2), (p2, 1)], "card_ok")
        declined = await shop.order(alice, [(p3, 1)], "card_declined")
        flaky = await shop.order(alice, [(p4, 1)], "card_flaky")
        assert paid["status"] == "pending"

        # then the payments settle each order as the contract says
        await shop.wait_status(alice, paid["id"], "paid")
        await shop.wait_status(alice, declined["id"], "payment_failed")
        await shop.wait_status(alice, flaky["id"], "paid")

        # and alice got exactly one welcome, three confirmations, two receipts, one notice
        async def all_mail() -> list[object]:
            mails = smtp.mailbox.to(alice.email)
            return mails if len(mails) >= 7 else []

        mails = await eventually(all_mail, timeout=30, what="alice's 7 mails")
        assert len(smtp.mailbox.to(alice.email)) == 7
        bodies = [m.get_body(preferencelist=("plain",)).get_content() for m in mails]  # type: ignore[attr-defined]
        assert any(declined["id"] in b for b in bodies)

        # and bob cannot see alice's order
        assert (await shop.get_order(bob, paid["id"])).status_code == 404

        # and recommendations answer for both
        for who in (alice, bob):
            r = await shop.http.get(f"{system.orders_url}/recommendations", headers=who.auth)
            assert r.status_code == 200
            assert r.json()["strategy"] in ("item-cf", "popular", "fallback")

        # and analytics counted the orders and the payments
        env = system.env("analytics")

        def report() -> dict[str, object]:
            out = subprocess.run(
                [sys.executable, "-m", "analytics", "report", "--format", "json"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return json.loads(out.stdout)

        async def counted() -> dict[str, object] | None:
            data = report()
            return data if _total(data, "orders") >= 3 and _total(data, "signups") >= 2 else None

        await eventually(counted, timeout=30, interval=0.5, what="analytics counts")
    finally:
        await shop.close()


def _total(report: dict[str, object], key: str) -> int:
    """Sum a per-day count across the report's days, whatever its exact layout."""
    days = report.get("days") or report.get("daily") or []
    total = 0
    if isinstance(days, dict):
        days = list(days.values())
    for day in days:  # type: ignore[union-attr]
        if isinstance(day, dict):
            total += int(day.get(key, 0) or 0)
    return total


async def test_every_service_answers_health_and_metrics(system: System) -> None:
    system.start()
    await system.ready()
    async with httpx.AsyncClient(timeout=5) as client:
        for url in (system.users_url, system.orders_url):
            assert (await client.get(f"{url}/health/live")).status_code == 200
            assert (await client.get(f"{url}/openapi.json")).status_code == 200
            assert (await client.get(f"{url}/docs")).status_code == 200
            metrics = await client.get(f"{url}/metrics")
            assert "eventshop_http_requests_total" in metrics.text
        worker = await client.get(f"http://127.0.0.1:{system.metrics_ports['payments']}/metrics")
        assert worker.status_code == 200
        assert "eventshop_messages_total" in worker.text or "python_info" in worker.text


async def test_sigterm_stops_every_service_with_exit_code_0(system: System) -> None:
    system.start()
    await system.ready()
    codes = system.stop_all()
    assert codes == dict.fromkeys(codes, 0), codes
    assert Counter(codes.values()) == Counter({0: 6})
