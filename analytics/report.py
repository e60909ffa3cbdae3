"""``python -m analytics report``: read the pre-aggregated documents and print them, as a
rich table for humans or as JSON for machines. Reading is cheap by construction: a day is
one document, the funnel one, percentiles are index seeks, nothing rescans the event log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING
from rich import box
from rich.console import Console
from rich.table import Table

from analytics.aggregates import STAGES
from analytics.store import AnalyticsStore
from events.contracts import REGISTRY

DAY_FIELDS = ("events", "signups", "orders", "payments_completed", "payments_failed")


def money(cents: int) -> str:
    """Integer cents as the contract's decimal string (``1990`` -> ``"19.90"``)."""
    return format(Decimal(cents).scaleb(-2), ".2f")


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def nearest_rank(percentile: float, count: int) -> int:
    """1-based rank of the nearest-rank percentile among ``count`` sorted values."""
    return min(count, max(1, math.ceil(percentile / 100 * count)))


def day_row(day: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"date": day}
    row.update({name: int(doc.get(name, 0)) for name in DAY_FIELDS})
    row["revenue"] = {cur: money(c) for cur, c in sorted(doc.get("revenue", {}).items())}
    row["payment_success_rate"] = ratio(
        row["payments_completed"], row["payments_completed"] + row["payments_failed"]
    )
    return row


def totals(docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    summed: dict[str, Any] = {name: 0 for name in DAY_FIELDS}
    revenue: dict[str, int] = {}
    for doc in docs:
        for name in DAY_FIELDS:
            summed[name] += int(doc.get(name, 0))
        for cur, c in doc.get("revenue", {}).items():
            revenue[cur] = revenue.get(cur, 0) + c
    summed["revenue"] = revenue
    row = day_row("total", summed)
    del row["date"]
    return row


async def build_report(
    store: AnalyticsStore, *, today: date, days: int | None = None, top: int = 5
) -> dict[str, Any]:
    """The whole report as plain JSON-ready data. ``days`` limits the per-day section to
    the last N days up to ``today`` (every day listed, zeros included); without it, every
    day that has events. Products, funnel, latency and event counts are all-time."""
    query: dict[str, Any] = {}
    window: dict[str, Any] = {"days": days, "from": None, "to": None}
    if days is not None:
        first = today - timedelta(days=days - 1)
        window.update({"from": first.isoformat(), "to": today.isoformat()})
        query = {"_id": {"$gte": first.isoformat(), "$lte": today.isoformat()}}
    docs = {doc["_id"]: doc async for doc in store.daily.find(query).sort("_id", ASCENDING)}
    if days is not None:
        span = [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
    else:
        span = sorted(docs)
        if span:
            window.update({"from": span[0], "to": span[-1]})
    counters = {doc["_id"]: doc async for doc in store.counters.find({})}
    funnel = {stage: int(counters.get("funnel", {}).get(stage, 0)) for stage in STAGES}
    seen = {stage: int(counters.get("users", {}).get(stage, 0)) for stage in STAGES}
    events = counters.get("events", {})
    by_type = {doc["_id"]: int(doc.get("count", 0)) async for doc in store.types.find({})}
    return {
        "window": window,
        "daily": [day_row(day, docs.get(day, {})) for day in span],
        "totals": totals(docs.values()),
        "top_products": await _top_products(store, top),
        "funnel": {
            **funnel,
            "order_rate": ratio(funnel["ordered"], funnel["registered"]),
            "payment_rate": ratio(funnel["paid"], funnel["ordered"]),
        },
        "users": seen,
        "payment_latency_ms": await _latency(store),
        "events": {
            "total": int(events.get("total", 0)),
            "unknown": int(events.get("unknown", 0)),
            "invalid": int(events.get("invalid", 0)),
            "by_type": dict(sorted(by_type.items())),
            "unknown_types": sorted(t for t in by_type if t not in REGISTRY),
        },
    }


async def _top_products(store: AnalyticsStore, top: int) -> dict[str, Any]:
    by_quantity = [
        {
            "product_id": doc["_id"],
            "quantity": int(doc.get("quantity", 0)),
            "revenue": {cur: money(c) for cur, c in sorted(doc.get("revenue", {}).items())},
        }
        async for doc in store.products.find({})
        .sort([("quantity", DESCENDING), ("_id", ASCENDING)])
        .limit(top)
    ]
    # Amounts in different currencies do not add up: rank revenue within each currency.
    # The collection holds one document per catalog product, so reading it whole is cheap.
    lines = [
        (cur, c, doc["_id"], int(doc.get("quantity", 0)))
        async for doc in store.products.find({})
        for cur, c in doc.get("revenue", {}).items()
    ]
    by_revenue: list[dict[str, Any]] = []
    for currency in sorted({line[0] for line in lines}):
        ranked = sorted(
            (line for line in lines if line[0] == currency), key=lambda x: (-x[1], x[2])
        )
        by_revenue.extend(
            {"product_id": pid, "currency": cur, "revenue": money(c), "quantity": qty}
            for cur, c, pid, qty in ranked[:top]
        )
    return {"by_quantity": by_quantity, "by_revenue": by_revenue}


async def _latency(store: AnalyticsStore) -> dict[str, Any]:
    """Nearest-rank p50/p95 and the maximum of order.created -> payment result."""
    measured = {"latency_us": {"$exists": True}}
    count = await store.orders.count_documents(measured)
    out: dict[str, Any] = {"count": count, "p50": None, "p95": None, "max": None}
    if count == 0:
        return out

    async def at(rank: int) -> float:
        cursor = store.orders.find(measured, {"latency_us": 1}).sort("latency_us", ASCENDING)
        doc = await cursor.skip(rank - 1).limit(1).next()
        return round(int(doc["latency_us"]) / 1000, 3)

    out["p50"] = await at(nearest_rank(50, count))
    out["p95"] = await at(nearest_rank(95, count))
    out["max"] = await at(count)
    return out


# -- rendering ---------------------------------------------------------------------------
def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2)


def console_for(stream: Any = None) -> Console:
    """A console for the table; a file or pipe gets 120 columns rather than rich's 80."""
    console = Console(file=stream)
    if not console.is_terminal:
        console = Console(file=stream, width=120)
    return console


def render_table(report: Mapping[str, Any], console: Console) -> None:
    window = report["window"]
    span = f"{window['from']} .. {window['to']}" if window["from"] else "no events yet"
    daily = _table(f"Per day (UTC), {span}")
    for name in ("Date", "Events", "Sign-ups", "Orders", "Revenue", "Paid", "Failed", "Success"):
        daily.add_column(
            name, justify="left" if name == "Date" else "right", no_wrap=True, min_width=len(name)
        )
    for row in report["daily"]:
        daily.add_row(*_day_cells(row["date"], row))
    daily.add_section()
    daily.add_row(*_day_cells("total", report["totals"]), style="bold")
    console.print(daily)

    products = _table("Top products (paid orders, all time)")
    for name in ("By quantity", "Qty", "By revenue", "Revenue"):
        products.add_column(name, justify="right" if name in ("Qty", "Revenue") else "left")
    top = report["top_products"]
    for i in range(max(len(top["by_quantity"]), len(top["by_revenue"]))):
        q = top["by_quantity"][i] if i < len(top["by_quantity"]) else None
        r = top["by_revenue"][i] if i < len(top["by_revenue"]) else None
        products.add_row(
            q["product_id"] if q else "",
            str(q["quantity"]) if q else "",
            r["product_id"] if r else "",
            f"{r['currency']} {r['revenue']}" if r else "",
        )
    console.print(products)

    funnel = report["funnel"]
    flow = _table("Funnel (distinct users, all time)")
    flow.add_column("Stage")
    flow.add_column("Users", justify="right")
    flow.add_column("Of previous", justify="right")
    flow.add_row("registered", str(funnel["registered"]), "")
    flow.add_row("ordered", str(funnel["ordered"]), _percent(funnel["order_rate"]))
    flow.add_row("paid", str(funnel["paid"]), _percent(funnel["payment_rate"]))
    console.print(flow)

    latency = report["payment_latency_ms"]
    lat = _table("Payment latency, ms (order.created -> payment result)")
    for name in ("Orders", "p50", "p95", "max"):
        lat.add_column(name, justify="right")
    lat.add_row(str(latency["count"]), *(_number(latency[k]) for k in ("p50", "p95", "max")))
    console.print(lat)

    events = report["events"]
    kinds = _table(f"Events stored: {events['total']}")
    kinds.add_column("Type")
    kinds.add_column("Count", justify="right")
    for name, count in events["by_type"].items():
        kinds.add_row(name + ("" if name in REGISTRY else " (unknown)"), str(count))
    if events["invalid"]:
        kinds.add_row("invalid data (known type)", str(events["invalid"]), style="yellow")
    console.print(kinds)


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        min_width=len(title),
    )


def _day_cells(label: str, row: Mapping[str, Any]) -> list[str]:
    revenue = ", ".join(f"{cur} {amount}" for cur, amount in row["revenue"].items()) or "0.00"
    return [
        label,
        str(row["events"]),
        str(row["signups"]),
        str(row["orders"]),
        revenue,
        str(row["payments_completed"]),
        str(row["payments_failed"]),
        _percent(row["payment_success_rate"]),
    ]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
