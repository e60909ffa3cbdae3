"""``python -m analytics [report|rebuild]``: the worker, or one of its two commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from pymongo.errors import PyMongoError

from analytics.bootstrap import bootstrap
from analytics.config import Settings
from analytics.report import build_report, console_for, render_json, render_table
from analytics.store import AnalyticsStore
from events.contracts import utcnow
from events.runtime import run_worker
from events.store import connect_mongo

DESCRIPTION = (
    "Without a command: run the analytics worker. It consumes every event on shop.events "
    "(queue 'analytics', bound to '#'), stores each once in an append-only log and keeps "
    "per-day sign-ups, orders, revenue and payment success rate, top products, the "
    "registration -> order -> payment funnel and the order -> payment latency."
)
ENVIRONMENT = (
    "Configured only through environment variables: AMQP_URL, MONGODB_URL, "
    "MONGODB_DB_PREFIX (database <prefix>analytics), LOG_LEVEL, LOG_FORMAT (json|console), "
    "PREFETCH, RETRY_DELAYS, METRICS_PORT."
)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m analytics", description=DESCRIPTION, epilog=ENVIRONMENT
    )
    commands = root.add_subparsers(dest="command", metavar="{report,rebuild}")
    report = commands.add_parser(
        "report",
        help="print the reports",
        description="Print the pre-aggregated reports (read from the database).",
        epilog=ENVIRONMENT,
    )
    report.add_argument(
        "--days",
        type=positive,
        metavar="N",
        help="per-day rows for the last N days up to today, UTC (default: every day with events)",
    )
    report.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="a table for humans (default) or JSON for machines",
    )
    report.add_argument(
        "--top", type=positive, default=5, metavar="N", help="top products to list (default 5)"
    )
    commands.add_parser(
        "rebuild",
        help="recompute every aggregate from the event log",
        description=(
            "Recompute every aggregate from the stored event log, in one transaction; the "
            "result equals what the live worker computed event by event."
        ),
        epilog=ENVIRONMENT,
    )
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        run_worker(Settings, bootstrap, description=DESCRIPTION, argv=[])
        return
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        code = asyncio.run(_command(args))
        sys.stdout.flush()
    except BrokenPipeError:
        # `report | head`: the reader left; that is not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


async def _command(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        client = await connect_mongo(settings.mongodb_url, name="analytics-cli", attempts=3)
    except PyMongoError as exc:
        print(
            f"cannot reach MongoDB at {settings.mongodb_url} ({type(exc).__name__}); "
            "is it running, and are MONGODB_URL and MONGODB_DB_PREFIX right?",
            file=sys.stderr,
        )
        return 2
    try:
        store = AnalyticsStore(client, settings.database_name)
        if args.command == "rebuild":
            await store.setup()
            count = await store.rebuild()
            print(f"rebuilt every aggregate from {count} stored event(s)")
            return 0
        report = await build_report(store, today=utcnow().date(), days=args.days, top=args.top)
        if args.format == "json":
            print(render_json(report))
        else:
            render_table(report, console_for())
        return 0
    finally:
        await client.close()


if __name__ == "__main__":
    main()
