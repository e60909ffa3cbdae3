"""The whole pipeline under load: all six services as real processes (plus SecantusDB,
a RabbitMQ vhost and an SMTP sink), orders placed over HTTP, results watched on the
exchange and in the mailbox.

1. **max**: closed-loop saturation (``--concurrency`` clients placing orders back to back);
   the maximum sustained rate is the rate at which receipts arrive while the load lasts.
2. **rates**: an open-loop generator at 10%, 50% and 80% of that maximum. Each order has an
   intended send time (``i / rate``) and latencies are measured from it, so a stalled
   server cannot hide its queueing (coordinated omission). Reported: HTTP response,
   payment result (``PaymentCompleted`` seen on ``shop.events``) and receipt mail, each
   from the intended send; and from the ``OrderCreated`` commit (the event's ``time``).
3. **cost**: CPU seconds per order summed over the six service processes (``/proc``,
   RabbitMQ and the database server excluded), for runs of 1k and 10k orders at a fixed
   rate; cost per order should stay flat (within 20%).

    uv run python -m bench.pipeline           # full run (~35 min), docs/bench-results/
    uv run python -m bench.pipeline --smoke   # ~3 min, nothing saved (CI-sized)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage
from pymongo import MongoClient

from bench._system import (
    SERVICES,
    Services,
    SmtpSink,
    cpu_seconds,
    machine,
    missing_services,
    queue_depths,
    register,
    save_json,
    secantus,
    vhost,
    workdir,
)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
FRACTIONS = (0.1, 0.5, 0.8)


# -- what we observe ----------------------------------------------------------------------------
@dataclass
class Placed:
    """One order as the load generator saw it (wall-clock seconds, ``time.time()``)."""

    intended: float
    responded: float


@dataclass
class Observer:
    """Joins what the generator sent, what crossed the exchange and what reached the
    mailbox, by order id."""

    placed: dict[str, Placed] = field(default_factory=dict)
    committed: dict[str, float] = field(default_factory=dict)  # OrderCreated.time
    paid: dict[str, float] = field(default_factory=dict)  # PaymentCompleted seen
    failed: dict[str, float] = field(default_factory=dict)  # PaymentFailed seen
    http_errors: dict[str, int] = field(default_factory=dict)

    def on_event(self, message: AbstractIncomingMessage) -> None:
        seen = time.time()
        event = json.loads(message.body)
        order_id = event.get("data", {}).get("order_id")
        if not order_id:
            return
        kind = event.get("type")
        if kind == "OrderCreated":
            self.committed[order_id] = datetime.fromisoformat(event["time"]).timestamp()
        elif kind == "PaymentCompleted":
            self.paid.setdefault(order_id, seen)
        elif kind == "PaymentFailed":
            self.failed.setdefault(order_id, seen)

    def error(self, what: str) -> None:
        self.http_errors[what] = self.http_errors.get(what, 0) + 1


class Receipts:
    """order id -> when its receipt ("Receipt for order <id>") reached the mailbox; reads
    only the mails that arrived since the last look."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.at: dict[str, float] = {}
        self._seen = 0

    def __call__(self) -> dict[str, float]:
        mails = self.sink.snapshot()
        for mail in mails[self._seen :]:
            if "receipt" in mail.subject.lower() and (found := UUID.search(mail.subject)):
                self.at.setdefault(found.group(0), mail.at)
        self._seen = len(mails)
        return self.at


# -- statistics ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(values: list[float]) -> dict[str, float | None]:
    return {
        f"p{q}": None if (v := percentile(values, q)) is None else round(v * 1000, 1)
        for q in (50, 95, 99)
    } | {"max": round(max(values) * 1000, 1) if values else None}


def latencies(obs: Observer, ids: list[str], mail: dict[str, float]) -> dict[str, Any]:
    def span(start: Callable[[str], float | None], end: Callable[[str], float | None]) -> Any:
        values = []
        for order_id in ids:
            a, b = start(order_id), end(order_id)
            if a is not None and b is not None:
                values.append(max(0.0, b - a))
        return summary_ms(values) | {"n": len(values)}

    def intended(i: str) -> float:
        return obs.placed[i].intended

    return {
        "http": span(intended, lambda i: obs.placed[i].responded),
        "paid": span(intended, obs.paid.get),
        "receipt": span(intended, mail.get),
        "commit_to_paid": span(obs.committed.get, obs.paid.get),
        "commit_to_receipt": span(obs.committed.get, mail.get),
    }


# -- load ---------------------------------------------------------------------------------------
class Shop:
    """Places orders as the registered users, two catalog products each."""

    def __init__(
        self, client: httpx.AsyncClient, url: str, tokens: list[str], products: list[str]
    ) -> None:
        self.client = client
        self.url = url
        self.tokens = tokens
        self.products = products
        self.random = random.Random(7)
        self.count = 0

    def body(self) -> dict[str, Any]:
        a, b = self.random.sample(self.products, 2)
        return {
            "items": [
                {"product_id": a, "quantity": self.random.randint(1, 3)},
                {"product_id": b, "quantity": 1},
            ]
        }

    async def place(self, obs: Observer, intended: float, ids: list[str]) -> None:
        token = self.tokens[self.count % len(self.tokens)]
        self.count += 1
        try:
            response = await self.client.post(
                f"{self.url}/orders",
                json=self.body(),
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            obs.error(type(exc).__name__)
            return
        if response.status_code != 201:
            obs.error(str(response.status_code))
            return
        order_id = response.json()["id"]
        obs.placed[order_id] = Placed(intended=intended, responded=time.time())
        ids.append(order_id)


async def open_loop(shop: Shop, obs: Observer, rate: float, count: int) -> list[str]:
    """Send ``count`` orders at ``rate``/s, each at its intended time, whatever the answers
    to earlier ones are doing (open loop)."""
    loop = asyncio.get_running_loop()
    ids: list[str] = []
    start_mono, start_wall = loop.time(), time.time()
    tasks = []
    for i in range(count):
        delay = start_mono + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(shop.place(obs, start_wall + i / rate, ids)))
    await asyncio.gather(*tasks)
    return ids


async def closed_loop(shop: Shop, obs: Observer, concurrency: int, seconds: float) -> list[str]:
    loop = asyncio.get_running_loop()
    ids: list[str] = []
    stop = loop.time() + seconds

    async def client() -> None:
        while loop.time() < stop:
            await shop.place(obs, time.time(), ids)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return ids


async def until(
    probe: Callable[[], Awaitable[bool] | bool], timeout: float, what: str, interval: float = 0.2
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            print(f"  (gave up waiting for {what} after {timeout:.0f}s)", flush=True)
            return False
        await asyncio.sleep(interval)


async def quiet(amqp_url: str, timeout: float = 120) -> bool:
    """Every queue of the vhost empty (nothing ready, nothing in hand) twice in a row."""
    streak = 0
    busy: dict[str, int] = {}

    async def empty() -> bool:
        nonlocal streak, busy
        depths = await asyncio.to_thread(queue_depths, amqp_url)
        busy = {q: n for q, n in depths.items() if n and not q.endswith(".dlq")}
        streak = streak + 1 if not busy else 0
        return streak >= 2

    done = await until(empty, timeout, "empty queues", interval=0.5)
    if not done:
        print(f"  still busy: {busy}", flush=True)
    return done


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Bench:
    args: argparse.Namespace
    services: Services
    sink: SmtpSink
    obs: Observer
    shop: Shop
    db_pid: int
    db: MongoClient[dict[str, Any]]
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.receipts = Receipts(self.sink)

    async def drain(self, ids: list[str], timeout: float) -> float:
        """Wait until every order has its payment result and receipt and every queue is
        empty (analytics and the recommender caught up too); returns when that was."""
        await until(
            lambda: all(i in self.obs.paid or i in self.obs.failed for i in ids),
            timeout,
            "payment results",
        )
        await until(lambda: set(ids) <= self.receipts().keys(), timeout, "receipts")
        await quiet(self.services.amqp_url, timeout)
        return time.time()

    def checkpoint(self) -> None:
        """Save what is measured so far: a run stopped later still leaves its figures."""
        if self.args.out_name:
            save_json(self.args.out_name, {**header(self.args), **self.results, "complete": False})

    def db_ops(self) -> int:
        counters = self.db.admin.command("serverStatus")["opcounters"]
        return sum(int(v) for v in counters.values())

    async def max_rate(self) -> float:
        a = self.args
        print(f"\n[max] closed loop, {a.concurrency} clients, {a.max_seconds:.0f} s", flush=True)
        t0 = time.time()
        ids = await closed_loop(self.shop, self.obs, a.concurrency, a.max_seconds)
        t1 = time.time()
        caught_up = await self.drain(ids, timeout=self.args.drain_timeout)
        mail = self.receipts()
        # Skip the first fifth: the pipeline fills up before receipts flow at full rate.
        w0 = t0 + a.max_seconds / 5
        in_window = sum(1 for i in ids if i in mail and w0 <= mail[i] <= t1)
        receipts_rate = in_window / (t1 - w0)
        # Every consumer (analytics and the recommender too) must keep up, or its queue
        # grows without bound: the whole system sustains what it finished per second.
        whole = len(ids) / (caught_up - t0)
        sustained = min(receipts_rate, whole)
        accepted = len(ids) / (t1 - t0)
        self.results["max"] = {
            "concurrency": a.concurrency,
            "seconds": a.max_seconds,
            "orders": len(ids),
            "accepted_per_s": round(accepted, 1),
            "receipts_per_s": round(receipts_rate, 1),
            "all_consumers_per_s": round(whole, 1),
            "sustained_per_s": round(sustained, 1),
            "latency_ms": latencies(self.obs, ids, mail),
        }
        print(
            f"  HTTP accepted {accepted:.1f} orders/s; receipts flowed at {receipts_rate:.1f}/s "
            f"while loaded; all consumers done with {len(ids)} orders after "
            f"{caught_up - t0:.1f} s ({whole:.1f}/s) -> max sustained {sustained:.1f}/s",
            flush=True,
        )
        return float(sustained)

    async def fixed_rates(self, top: float) -> None:
        self.results["rates"] = []
        for fraction in FRACTIONS:
            rate = max(0.5, top * fraction)
            count = max(5, round(rate * self.args.rate_seconds))
            print(
                f"\n[rate] {fraction:.0%} of max = {rate:.1f} orders/s, {count} orders", flush=True
            )
            t0 = time.time()
            ids = await open_loop(self.shop, self.obs, rate, count)
            t1 = time.time()
            await self.drain(ids, timeout=self.args.drain_timeout)
            mail = self.receipts()
            lat = latencies(self.obs, ids, mail)
            self.results["rates"].append(
                {
                    "fraction": fraction,
                    "target_per_s": round(rate, 2),
                    "achieved_per_s": round(len(ids) / (t1 - t0), 2),
                    "orders": count,
                    "placed": len(ids),
                    "completed": lat["receipt"]["n"],
                    "latency_ms": lat,
                }
            )
            print(
                f"  paid p50/p95/p99 {_fmt(lat['paid'])} ms; receipt {_fmt(lat['receipt'])} ms",
                flush=True,
            )

    async def cost(self, rate: float) -> None:
        self.results["cost"] = []
        idle = await self.idle_cpu()
        for n in self.args.orders:
            print(f"\n[cost] {n} orders at {rate:.1f}/s", flush=True)
            await quiet(self.services.amqp_url)
            cpu0, db0, ops0 = self.services.cpu(), cpu_seconds(self.db_pid), self.db_ops()
            gen0 = time.process_time()
            t0 = time.time()
            samples: list[dict[str, float]] = []
            sampler = asyncio.create_task(self.sample(samples, t0))
            ids = await open_loop(self.shop, self.obs, rate, n)
            await self.drain(ids, timeout=2 * self.args.drain_timeout)
            sampler.cancel()
            wall = time.time() - t0
            cpu1, db1, ops1 = self.services.cpu(), cpu_seconds(self.db_pid), self.db_ops()
            gen = time.process_time() - gen0
            per_service = {s: (cpu1[s] - cpu0[s]) * 1000 / n for s in cpu0}
            total = sum(cpu1[s] - cpu0[s] for s in cpu0)
            corrected = total - idle * wall
            row = {
                "orders": n,
                "placed": len(ids),
                "rate_per_s": round(rate, 2),
                "wall_s": round(wall, 1),
                "cpu_s": round(total, 2),
                "cpu_ms_per_order": round(total * 1000 / n, 2),
                "cpu_ms_per_order_idle_corrected": round(corrected * 1000 / n, 2),
                "per_service_ms": {s: round(v, 2) for s, v in per_service.items()},
                "db_server_cpu_ms_per_order": round((db1 - db0) * 1000 / n, 2),
                "db_ops_per_order": round((ops1 - ops0) / n, 1),
                "generator_cpu_ms_per_order": round(gen * 1000 / n, 2),
                "samples": samples,
            }
            self.results["cost"].append(row)
            self.checkpoint()
            print(
                f"  {row['cpu_ms_per_order']} ms CPU/order over six services "
                f"({row['cpu_ms_per_order_idle_corrected']} without idle); "
                + ", ".join(f"{s} {v:.2f}" for s, v in per_service.items()),
                flush=True,
            )
        self.results["idle_cpu_s_per_s"] = round(idle, 4)

    async def sample(self, samples: list[dict[str, float]], t0: float) -> None:
        while True:
            await asyncio.sleep(5)
            samples.append(
                {
                    "t": round(time.time() - t0, 1),
                    "cpu_s": round(sum(self.services.cpu().values()), 2),
                    "receipts": len(self.receipts()),
                }
            )

    async def idle_cpu(self, seconds: float = 5) -> float:
        """CPU seconds per second the six services burn while nothing happens (relays
        polling, health probes)."""
        await quiet(self.services.amqp_url)
        before = sum(self.services.cpu().values())
        await asyncio.sleep(seconds)
        return (sum(self.services.cpu().values()) - before) / seconds


def _fmt(summary: dict[str, Any]) -> str:
    return "/".join(
        "-" if summary[k] is None else f"{summary[k]:.0f}" for k in ("p50", "p95", "p99")
    )


async def run(args: argparse.Namespace, services: Services, sink: SmtpSink, db_pid: int) -> Bench:
    obs = Observer()
    names = [f"bench_{i}_{os.getpid()}" for i in range(args.users)]
    tokens = [await asyncio.to_thread(register, services.users_url, n) for n in names]
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        products = [p["id"] for p in (await client.get(f"{services.orders_url}/products")).json()]
        connection = await aio_pika.connect(services.amqp_url)
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                "shop.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue("", exclusive=True)
            for key in ("order.created", "payment.completed", "payment.failed"):
                await queue.bind(exchange, key)
            await queue.consume(_sync(obs.on_event), no_ack=True)
            # The notifier learns addresses from user.registered: wait for the welcomes.
            await until(
                lambda: sum("welcome" in m.subject.lower() for m in sink.snapshot()) >= len(names),
                60,
                "welcome mails",
            )
            db: MongoClient[dict[str, Any]]
            with MongoClient(services.mongodb_url) as db:
                shop = Shop(client, services.orders_url, tokens, products)
                bench = Bench(args, services, sink, obs, shop, db_pid, db)
                if args.cost_only:
                    await bench.cost(args.cost_only)
                else:
                    top = await bench.max_rate()
                    bench.checkpoint()
                    await bench.fixed_rates(top)
                    bench.checkpoint()
                    await bench.cost(max(0.5, top * args.cost_fraction))
        finally:
            await connection.close()
    bench.results["http_errors"] = obs.http_errors
    return bench


def _sync(
    fn: Callable[[AbstractIncomingMessage], None],
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    async def call(message: AbstractIncomingMessage) -> None:
        fn(message)

    return call


def print_tables(results: dict[str, Any]) -> None:
    m = results.get("max")
    if m is None and not results.get("cost"):
        print("no results yet")
        return
    if m is not None:
        print(
            f"\nmax sustained: {m['sustained_per_s']} orders/s "
            f"(HTTP accepted {m['accepted_per_s']}/s with {m['concurrency']} clients)\n"
        )
    print(
        "| load | orders/s | orders | HTTP p50/p99 ms | paid p50/p95/p99 ms "
        "| receipt p50/p95/p99 ms | commit→paid p50/p99 ms |"
    )
    print("|---|---:|---:|---|---|---|---|")
    for r in results.get("rates", []):
        lat = r["latency_ms"]
        http = f"{lat['http']['p50']:.0f}/{lat['http']['p99']:.0f}" if lat["http"]["n"] else "-"
        c2p = lat["commit_to_paid"]
        c2p_s = f"{c2p['p50']:.0f}/{c2p['p99']:.0f}" if c2p["n"] else "-"
        print(
            f"| {r['fraction']:.0%} | {r['achieved_per_s']} | {r['completed']}/{r['orders']} "
            f"| {http} | {_fmt(lat['paid'])} | {_fmt(lat['receipt'])} | {c2p_s} |"
        )
    print(
        "\n| orders | CPU ms/order (six services) | idle-corrected | database server ms/order "
        "(excluded) | DB ops/order |"
    )
    print("|---:|---:|---:|---:|---:|")
    for c in results.get("cost", []):
        print(
            f"| {c['orders']:,} | {c['cpu_ms_per_order']} | "
            f"{c['cpu_ms_per_order_idle_corrected']} | {c['db_server_cpu_ms_per_order']} "
            f"| {c['db_ops_per_order']} |"
        )
    costs = results.get("cost", [])
    if len(costs) >= 2:
        first, last = costs[0], costs[-1]
        ratio = last["cpu_ms_per_order_idle_corrected"] / first["cpu_ms_per_order_idle_corrected"]
        flat = abs(ratio - 1) <= 0.2
        results["cost_ratio"] = round(ratio, 3)
        print(
            f"\ncost per order, {last['orders']:,} vs {first['orders']:,} orders: {ratio:.2f}x "
            f"-> {'flat (within ±20%)' if flat else 'NOT flat (outside ±20%)'}"
        )


def header(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "bench": "pipeline",
        "label": args.label,
        "machine": args.machine,
        "load_now": [round(x, 2) for x in os.getloadavg()],
        "commit": _commit(args.tree or Path.cwd()),
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("keep", "out", "smoke", "machine", "out_name")
        },
    }


def _commit(tree: Path) -> str | None:
    """The commit the services ran from (with "+dirty" for uncommitted changes)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="short phases, nothing saved")
    parser.add_argument("--concurrency", type=int, default=8, help="clients in the max phase")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--rate-seconds", type=float, default=30.0, help="per fixed rate")
    parser.add_argument(
        "--orders", default="1000,10000", help="order counts of the cost runs (comma separated)"
    )
    parser.add_argument(
        "--cost-fraction", type=float, default=0.8, help="rate of the cost runs, share of max"
    )
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument(
        "--drain-timeout", type=float, default=300, help="seconds to wait for a phase to finish"
    )
    parser.add_argument("--out", default=None, help="results file name in docs/bench-results")
    parser.add_argument("--label", default="", help="a note saved with the results")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="[SERVICE:]NAME=VALUE",
        help="extra environment for all services, or one (e.g. recommender:PREFETCH=1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    parser.add_argument(
        "--cost-only",
        type=float,
        default=None,
        metavar="RATE",
        help="only the cost runs, at RATE orders/s (for before/after comparisons)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=None,
        help="run the services from this source tree (e.g. a git worktree of another commit)",
    )
    args = parser.parse_args(argv)
    # A SIGTERM (or a CI timeout) still stops the services and removes the vhost.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.smoke:
        args.max_seconds, args.rate_seconds, args.drain_timeout = 6.0, 5.0, 60.0
        if args.orders == "1000,10000":
            args.orders = "50,200"
    args.orders = [int(x) for x in str(args.orders).split(",") if x.strip()]
    args.out_name = args.out or (None if args.smoke else "pipeline.json")

    tree = args.tree.resolve() if args.tree else None
    if missing := missing_services(SERVICES, *([tree] if tree else [])):
        print(f"services not built yet: {', '.join(missing)}", file=sys.stderr)
        return 2
    host = args.machine = machine()
    print(
        f"machine: {host['nproc']} cores, {host['cpu']}, {host['memory_gib']} GiB, "
        f"load {host['loadavg']}",
        flush=True,
    )
    with (
        workdir(keep=args.keep) as wd,
        secantus(wd) as (mongodb_url, db_pid),
        vhost() as amqp,
        SmtpSink() as sink,
    ):
        services = Services(amqp, mongodb_url, wd, smtp_port=sink.port)
        if tree:
            services.tree = tree
        for item in args.env:
            key, _, value = item.partition("=")
            target, _, name = key.rpartition(":")
            services.service_env.setdefault(target or "*", {})[name] = value
        services.start()
        try:
            services.wait_ready()
            bench = asyncio.run(run(args, services, sink, db_pid))
        finally:
            codes = services.stop_all()
            if args.keep:
                print(f"logs in {wd}")
    results = bench.results
    print_tables(results)
    bad_exits = {s: c for s, c in codes.items() if c != 0}
    if bad_exits:
        print(f"\nservices that did not exit 0 on SIGTERM: {bad_exits}")
    if args.out_name:
        path = save_json(
            args.out_name, {**header(args), **results, "exit_codes": codes, "complete": True}
        )
        print(f"saved {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
