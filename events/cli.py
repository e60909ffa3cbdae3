"""``python -m events``: the operator's commands.

    python -m events schemas [--out DIR] [--check]
    python -m events dlq list [SERVICE ...] [--json]
    python -m events dlq show SERVICE [--limit N] [--json]
    python -m events dlq replay SERVICE (--id ID ... | --all) [--json]
    python -m events dlq purge SERVICE [--yes]
    python -m events outbox status [--service S ...] [--json]

Configured like the services, through the environment: ``AMQP_URL`` (the vhost in the
URL is honoured), ``MONGODB_URL`` and ``MONGODB_DB_PREFIX``. Exit codes: 0 done, 1 the
operation failed (the message says why), 2 wrong usage or a refused confirmation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from events import schemas
from events.bus import dlq_name
from events.dlq import DeadLetters, OperatorError, Parked, redact
from events.outbox import Outbox
from events.settings import ServiceSettings
from events.topology import SERVICES, consumers

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ENV_HELP = (
    "Environment: AMQP_URL (default amqp://guest:guest@localhost:5672/, its vhost is used), "
    "MONGODB_URL, MONGODB_DB_PREFIX — the same variables the services read."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m events",
        description="eventshop operator tools: event schemas, dead-letter queues, outboxes.",
        epilog=ENV_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "schemas",
        help="write the JSON Schemas of the events and the AsyncAPI document",
        description="Write one JSON Schema per event type, the CloudEvents envelope's schema "
        "and the AsyncAPI 3.0 document of the bus (asyncapi.json) into DIR.",
    )
    p.add_argument("--out", type=Path, default=Path("schemas"), help="directory (./schemas)")
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when DIR differs from a fresh generation",
    )

    dlq = commands.add_parser(
        "dlq",
        help="inspect, replay or purge parked messages (<service>.dlq)",
        description="Parked messages are the ones that failed every attempt or could not be "
        "parsed. Reading them never consumes them.",
        epilog=ENV_HELP,
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    p = dlq_commands.add_parser(
        "list",
        help="messages per DLQ and the first errors",
        description="Count the parked messages of each service (all consuming services by "
        "default) and show the first errors.",
    )
    p.add_argument("services", nargs="*", metavar="SERVICE", help="default: every consumer")
    p.add_argument("--errors", type=int, default=3, help="first errors shown per DLQ (3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = dlq_commands.add_parser(
        "show",
        help="the parked messages of one service",
        description="Id, type, original routing key, attempts, error and time of failure "
        "of the first parked messages.",
    )
    p.add_argument("service")
    p.add_argument("--limit", type=_positive, default=20, help="at most N messages (20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = dlq_commands.add_parser(
        "replay",
        help="move parked messages back to the service's queue",
        description="Republish parked messages to the service's own queue (default exchange, "
        "original routing key kept in x-original-routing-key, error headers removed, attempt "
        "counter reset) with publisher confirms, and only then remove them from the DLQ.",
    )
    p.add_argument("service")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", action="append", dest="ids", metavar="ID", help="the event id (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="every message parked right now")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = dlq_commands.add_parser(
        "purge",
        help="drop every parked message of one service",
        description="Delete every message in <service>.dlq. Asks for confirmation on a "
        "terminal; without one it refuses unless --yes is given.",
    )
    p.add_argument("service")
    p.add_argument("--yes", action="store_true", help="do not ask")

    outbox = commands.add_parser(
        "outbox",
        help="outbox backlog per service",
        description="Events recorded but not yet published, per service database.",
        epilog=ENV_HELP,
    )
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    p = outbox_commands.add_parser(
        "status",
        help="pending events and the oldest one's age per service",
        description="Pending count and age of the oldest pending event in the outbox of each "
        "service database (<MONGODB_DB_PREFIX><service>).",
    )
    p.add_argument(
        "--service",
        action="append",
        dest="services",
        metavar="S",
        help="only this service (repeatable; default: all)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (``python -m events`` exits with it)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "schemas":
            return _schemas(args.out, check=args.check)
        settings = ServiceSettings()
        if args.command == "dlq":
            return asyncio.run(_dlq(args, settings))
        return asyncio.run(_outbox_status(args, settings))
    except OperatorError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED


# -- schemas ---------------------------------------------------------------------------------
def _schemas(out: Path, *, check: bool) -> int:
    if check:
        problems = schemas.stale(out)
        for problem in problems:
            _err(f"{out / problem}")
        if problems:
            _err("run `python -m events schemas` and commit the result")
            return EXIT_FAILED
        _out(f"{out}: up to date")
        return EXIT_OK
    for path in schemas.write(out):
        _out(f"wrote {path}")
    return EXIT_OK


# -- dlq -------------------------------------------------------------------------------------
async def _dlq(args: argparse.Namespace, settings: ServiceSettings) -> int:
    if args.dlq_command == "purge" and not args.yes and not sys.stdin.isatty():
        _err(
            f"refusing to purge {dlq_name(args.service)} without confirmation: no terminal to "
            "ask on; pass --yes if you mean it"
        )
        return EXIT_USAGE
    async with DeadLetters.open(settings.amqp_url) as dl:
        if args.dlq_command == "list":
            return await _dlq_list(dl, args.services, errors=args.errors, as_json=args.json)
        if args.dlq_command == "show":
            return await _dlq_show(dl, args.service, limit=args.limit, as_json=args.json)
        if args.dlq_command == "replay":
            return await _dlq_replay(dl, args.service, ids=args.ids, as_json=args.json)
        return await _dlq_purge(dl, args.service, yes=args.yes)


async def _dlq_list(dl: DeadLetters, services: list[str], *, errors: int, as_json: bool) -> int:
    names = services or [s.name for s in consumers()]
    rows: list[dict[str, Any]] = []
    for name in names:
        count = await dl.count(dlq_name(name))
        first = await dl.peek(name, limit=errors) if count and errors > 0 else []
        rows.append(
            {
                "service": name,
                "queue": dlq_name(name),
                "messages": count,
                "first": [p.as_dict() for p in first],
            }
        )
    if as_json:
        _print_json(rows)
    else:
        width = max(len(r["queue"]) for r in rows)
        for row in rows:
            count = row["messages"]
            text = "not declared (the service has not started here)" if count is None else count
            _out(f"{row['queue']:<{width}}  {text}")
            for p in row["first"]:
                _out(f"  {p['id']}  {p['type'] or '?'}  {_first_line(p['error'])}")
    # Asking about one service whose DLQ does not exist is a mistake worth an exit code.
    missing = [r["queue"] for r in rows if r["messages"] is None]
    if services and missing:
        _err(f"no such queue: {', '.join(missing)}")
        return EXIT_FAILED
    return EXIT_OK


async def _dlq_show(dl: DeadLetters, service: str, *, limit: int, as_json: bool) -> int:
    total = await dl.require(dlq_name(service))
    parked = await dl.peek(service, limit=limit)
    if as_json:
        _print_json(
            {
                "service": service,
                "queue": dlq_name(service),
                "messages": total,
                "shown": [p.as_dict() for p in parked],
            }
        )
        return EXIT_OK
    _out(f"{dlq_name(service)}: {total} message(s), showing {len(parked)}")
    for n, p in enumerate(parked, 1):
        _out(_describe(n, p))
    return EXIT_OK


def _describe(n: int, p: Parked) -> str:
    text = (
        f"[{n}] id {p.id or '?'}  type {p.type or '?'}  routing key {p.routing_key or '?'}\n"
        f"    attempts {p.attempts if p.attempts is not None else '?'}  "
        f"failed at {p.failed_at or '?'}  correlation id {p.correlation_id or '-'}\n"
        f"    error {(p.error or '(none recorded)').replace(chr(10), chr(10) + '      ')}"
    )
    if p.type is None:  # not even an envelope: show what it held
        text += f"\n    body {p.body[:200]!r}"
    return text


async def _dlq_replay(
    dl: DeadLetters, service: str, *, ids: list[str] | None, as_json: bool
) -> int:
    report = await dl.replay(service, ids=ids)
    if as_json:
        _print_json(
            {
                "service": service,
                "replayed": [p.as_dict() for p in report.replayed],
                "not_found": report.not_found,
            }
        )
    else:
        _out(f"replayed {len(report.replayed)} message(s) from {dlq_name(service)} to {service}")
        for p in report.replayed:
            _out(f"  {p.id}  {p.type or '?'}  {p.routing_key or '?'}")
    for missing in report.not_found:
        _err(f"not found in {dlq_name(service)}: {missing}")
    return EXIT_FAILED if report.not_found else EXIT_OK


async def _dlq_purge(dl: DeadLetters, service: str, *, yes: bool) -> int:
    queue = dlq_name(service)
    count = await dl.require(queue)
    if not yes:
        try:
            prompt = f"Purge {count} message(s) from {queue}? This cannot be undone. [y/N] "
            answer = await asyncio.to_thread(input, prompt)
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            _out("nothing purged")
            return EXIT_USAGE
    purged = await dl.purge(service)
    _out(f"purged {purged} message(s) from {queue}")
    return EXIT_OK


# -- outbox ----------------------------------------------------------------------------------
async def _outbox_status(args: argparse.Namespace, settings: ServiceSettings) -> int:
    from pymongo.errors import PyMongoError

    from events.store import connect_mongo

    names = args.services or [s.name for s in SERVICES]
    try:
        client = await connect_mongo(settings.mongodb_url, name="events-cli", attempts=1)
    except PyMongoError as exc:
        raise OperatorError(
            f"cannot reach MongoDB at {redact(settings.mongodb_url)} ({type(exc).__name__}); "
            "check MONGODB_URL"
        ) from exc
    rows: list[dict[str, Any]] = []
    try:
        for name in names:
            database = f"{settings.mongodb_db_prefix}{name}"
            db = client[database]
            row: dict[str, Any] = {"service": name, "database": database}
            if not await db.list_collection_names(filter={"name": "outbox"}):
                row.update(pending=None, oldest_pending_seconds=None)
            else:
                row.update(await Outbox(db["outbox"], source=f"/{name}").status())
            rows.append(row)
    except PyMongoError as exc:
        raise OperatorError(f"reading the outboxes failed: {type(exc).__name__}: {exc}") from exc
    finally:
        await client.close()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    sw = max(len("SERVICE"), *(len(r["service"]) for r in rows))
    dw = max(len("DATABASE"), *(len(r["database"]) for r in rows))
    _out(f"{'SERVICE':<{sw}}  {'DATABASE':<{dw}}  {'PENDING':>7}  OLDEST PENDING")
    for r in rows:
        if r["pending"] is None:
            pending, oldest = "-", "no outbox"
        else:
            pending = str(r["pending"])
            oldest = f"{r['oldest_pending_seconds']:.1f}s" if r["pending"] else "-"
        _out(f"{r['service']:<{sw}}  {r['database']:<{dw}}  {pending:>7}  {oldest}")
    return EXIT_OK


# -- output ----------------------------------------------------------------------------------
def _first_line(error: str | None, width: int = 160) -> str:
    """One line of an error for a listing (a pydantic error runs over many)."""
    if not error:
        return "(no error recorded)"
    line = error.splitlines()[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _print_json(value: Any) -> None:
    _out(json.dumps(value, indent=2, default=str))


def _out(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout)


def _err(text: str) -> None:
    print(text, file=sys.stderr)
