"""Rendering and arithmetic of ``python -m analytics report`` (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from analytics.__main__ import parser
from analytics.report import money, nearest_rank, ratio, render_json, render_table, totals


def test_cents_print_as_contract_money_strings() -> None:
    assert money(4147) == "41.47"
    assert money(5) == "0.05"
    assert money(0) == "0.00"
    assert money(-150) == "-1.50"


def test_payment_success_rate_is_undefined_without_payments() -> None:
    assert ratio(3, 4) == 0.75
    assert ratio(1, 3) == 0.3333
    assert ratio(0, 0) is None


@pytest.mark.parametrize(
    ("percentile", "count", "rank"),
    [(50, 4, 2), (95, 4, 4), (50, 1, 1), (95, 100, 95), (50, 5, 3), (100, 7, 7)],
)
def test_percentiles_use_the_nearest_rank(percentile: float, count: int, rank: int) -> None:
    assert nearest_rank(percentile, count) == rank


def test_totals_add_days_and_keep_currencies_apart() -> None:
    got = totals(
        [
            {"orders": 2, "payments_completed": 1, "payments_failed": 1, "revenue": {"EUR": 150}},
            {"orders": 1, "payments_completed": 2, "revenue": {"EUR": 50, "USD": 99}},
        ]
    )
    assert got["orders"] == 3
    assert got["revenue"] == {"EUR": "2.00", "USD": "0.99"}
    assert got["payment_success_rate"] == 0.75


def sample() -> dict[str, Any]:
    day = {
        "date": "2026-12-01",
        "events": 7,
        "signups": 3,
        "orders": 2,
        "payments_completed": 1,
        "payments_failed": 1,
        "revenue": {"EUR": "25.50"},
        "payment_success_rate": 0.5,
    }
    return {
        "window": {"days": None, "from": "2026-12-01", "to": "2026-12-01"},
        "daily": [day],
        "totals": {k: v for k, v in day.items() if k != "date"},
        "top_products": {
            "by_quantity": [{"product_id": "p1", "quantity": 3, "revenue": {"EUR": "30.00"}}],
            "by_revenue": [
                {"product_id": "p1", "currency": "EUR", "revenue": "30.00", "quantity": 3}
            ],
        },
        "funnel": {
            "registered": 3,
            "ordered": 2,
            "paid": 1,
            "order_rate": 0.6667,
            "payment_rate": 0.5,
        },
        "users": {"registered": 3, "ordered": 2, "paid": 1},
        "payment_latency_ms": {"count": 2, "p50": 200.0, "p95": 1500.0, "max": 1500.0},
        "events": {
            "total": 8,
            "unknown": 1,
            "invalid": 0,
            "by_type": {"Mystery": 1, "OrderCreated": 2},
            "unknown_types": ["Mystery"],
        },
    }


def test_table_shows_every_section() -> None:
    console = Console(record=True, width=120)
    render_table(sample(), console)
    text = console.export_text()
    for shown in (
        "2026-12-01",
        "EUR 25.50",
        "50.0%",
        "p1",
        "66.7%",
        "1,500.0",
        "Mystery (unknown)",
    ):
        assert shown in text


def test_json_is_the_report_as_is() -> None:
    assert json.loads(render_json(sample())) == sample()


def test_commands_and_their_options() -> None:
    assert parser().parse_args([]).command is None
    args = parser().parse_args(["report", "--days", "7", "--format", "json"])
    assert (args.command, args.days, args.format, args.top) == ("report", 7, "json", 5)
    assert parser().parse_args(["rebuild"]).command == "rebuild"
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "--days", "0"])
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "--format", "xml"])
