"""Bus throughput: publish + consume N events through (a) raw aio-pika, (b) eventshop's bus,
(c) FastStream — the same job each time, in one run, on the same broker.

    uv run python -m bench.bus              # N = 20000
    uv run python -m bench.bus --n 2000     # CI smoke
    uv run python -m bench.bus --profile    # + cProfile of our bus's run (top functions)

The job: N ``UserRegistered`` CloudEvents (~330 bytes of JSON each), published concurrently
to the durable topic exchange ``shop.events`` as persistent messages with publisher
confirms, routed to a durable quorum queue, consumed with the same prefetch and acked
manually one by one after the handler returned. The clock runs from the first publish to
the last ack (the consumer is already running), so msgs/s = N / that time.

* raw aio-pika — serialises each envelope (``CloudEvent.to_json()``), publishes with
  ``asyncio.gather``; the consumer only acks: the floor any bus on aio-pika pays.
* eventshop bus — ``Broker.publish_many`` and ``events.bus.Consumer`` with a trivial
  handler: the full path a service runs (parse + validate the envelope and the event,
  log context, span, metrics, ack).
* FastStream — ``RabbitBroker.publish`` (gathered, confirms on) of the same pydantic
  envelope, a subscriber whose argument is the envelope model with typed ``data``
  (validated by FastStream), ``AckPolicy.ACK``; its per-message log lines are off.

A fresh vhost is used when ``rabbitmqctl`` can reach the broker (deleted afterwards);
otherwise unique queue names on the URL's vhost. ``AMQP_URL`` selects the broker.
Never run as a test; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika

from events.bus import Broker, Consumer, dlq_name, retry_queue_name
from events.contracts import CONTENT_TYPE, EXCHANGE, CloudEvent, UserRegistered

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
RETRY_DELAYS = (1.0, 5.0, 30.0)


@dataclass
class Result:
    name: str
    n: int
    publish_s: float
    total_s: float
    cpu_s: float

    @property
    def cpu_us_per_msg(self) -> float:
        return self.cpu_s / self.n * 1e6

    @property
    def rate(self) -> float:
        return self.n / self.total_s


def envelopes(n: int) -> list[CloudEvent]:
    return [
        CloudEvent.wrap(
            UserRegistered(user_id=f"u{i}", username=f"user{i}", email=f"user{i}@example.com"),
            source="/bench",
            correlationid=str(uuid.uuid4()),
        )
        for i in range(n)
    ]


class Counter:
    """Counts handled messages; ``done`` is set at the N-th."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.seen += 1
        if self.seen >= self.n:
            self.done.set()


async def timed(
    publish: Callable[[], Awaitable[None]], counter: Counter
) -> tuple[float, float, float]:
    """(publish seconds, total seconds, CPU seconds of this process) for the whole job."""
    cpu = time.process_time()
    started = time.perf_counter()
    await publish()
    published = time.perf_counter()
    # Generous, but a contender that loses messages must fail the run, not hang it.
    await asyncio.wait_for(counter.done.wait(), timeout=max(60.0, counter.n / 100))
    return published - started, time.perf_counter() - started, time.process_time() - cpu


# -- (a) raw aio-pika ------------------------------------------------------------------------
async def run_raw(url: str, events: list[CloudEvent], prefetch: int, tag: str) -> Result:
    counter = Counter(len(events))
    key, queue_name = f"bench.raw.{tag}", f"bench-raw-{tag}"
    connection = await aio_pika.connect(url)
    try:
        pub = await connection.channel(publisher_confirms=True)
        exchange = await pub.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        sub = await connection.channel()
        await sub.set_qos(prefetch_count=prefetch)
        queue = await sub.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(EXCHANGE, routing_key=key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            counter.hit()

        consumer_tag = await queue.consume(on_message)

        async def publish() -> None:
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            env.to_json(),
                            content_type=CONTENT_TYPE,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=env.id,
                        ),
                        routing_key=key,
                    )
                    for env in events
                )
            )

        publish_s, total_s, cpu_s = await timed(publish, counter)
        await queue.cancel(consumer_tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return Result("raw aio-pika", len(events), publish_s, total_s, cpu_s)


# -- (b) eventshop's bus ---------------------------------------------------------------------
async def run_ours(
    url: str, events: list[CloudEvent], prefetch: int, tag: str, profile: bool = False
) -> Result:
    counter = Counter(len(events))
    service = f"bench-ours-{tag}"
    broker = Broker(url, name=service)
    await broker.connect(attempts=3)

    async def handler(event: UserRegistered, ctx: Any) -> None:
        counter.hit()

    consumer = Consumer(
        broker,
        service,
        {UserRegistered: handler},
        None,
        prefetch=prefetch,
        retry_delays=RETRY_DELAYS,
    )
    try:
        await consumer.start()
        items = [(env, UserRegistered.ROUTING_KEY) for env in events]

        async def publish() -> None:
            errors = await broker.publish_many(items)
            failed = [e for e in errors if e is not None]
            if failed:
                raise RuntimeError(f"{len(failed)} publishes failed: {failed[0]!r}")

        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        publish_s, total_s, cpu_s = await timed(publish, counter)
        if profiler:
            profiler.disable()
            print_profile(profiler)
        await consumer.stop()
        channel = await broker.connection.channel()
        for queue in (
            service,
            dlq_name(service),
            *(retry_queue_name(service, d) for d in RETRY_DELAYS),
        ):
            await channel.queue_delete(queue)
        await channel.close()
    finally:
        await broker.close()
    return Result("eventshop bus", len(events), publish_s, total_s, cpu_s)


# -- (c) FastStream --------------------------------------------------------------------------
async def run_faststream(url: str, events: list[CloudEvent], prefetch: int, tag: str) -> Result:
    from faststream import AckPolicy
    from faststream.rabbit import (
        Channel,
        ExchangeType,
        QueueType,
        RabbitBroker,
        RabbitExchange,
        RabbitQueue,
    )

    class UserRegisteredEnvelope(CloudEvent):
        data: UserRegistered  # type: ignore[assignment]

    counter = Counter(len(events))
    key, queue_name = f"bench.faststream.{tag}", f"bench-faststream-{tag}"
    broker = RabbitBroker(
        url, default_channel=Channel(prefetch_count=prefetch, publisher_confirms=True), logger=None
    )
    exchange = RabbitExchange(EXCHANGE, type=ExchangeType.TOPIC, durable=True)
    queue = RabbitQueue(queue_name, queue_type=QueueType.QUORUM, durable=True, routing_key=key)

    async def decode(message: Any) -> Any:
        # FastStream decodes JSON only for application/json; ours is cloudevents+json
        return json.loads(message.body)

    @broker.subscriber(queue, exchange, ack_policy=AckPolicy.ACK, decoder=decode)
    async def handle(event: UserRegisteredEnvelope) -> None:
        counter.hit()

    await broker.start()
    try:

        async def publish() -> None:
            await asyncio.gather(
                *(
                    broker.publish(
                        env,
                        exchange=exchange,
                        routing_key=key,
                        persist=True,
                        content_type=CONTENT_TYPE,
                        message_id=env.id,
                    )
                    for env in events
                )
            )

        publish_s, total_s, cpu_s = await timed(publish, counter)
    finally:
        await broker.stop()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue_name)
    return Result("FastStream", len(events), publish_s, total_s, cpu_s)


# -- running it ------------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_vhost(url: str) -> Iterator[tuple[str, str]]:
    """A throw-away vhost when rabbitmqctl can reach the broker; yields (url, where)."""
    ctl = shutil.which("rabbitmqctl")
    host = urlsplit(url).hostname or "localhost"
    if ctl is None or host not in ("localhost", "127.0.0.1", "::1"):
        yield url, "the URL's vhost (unique queue names)"
        return
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    user = urlsplit(url).username or "guest"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [ctl, "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe=""))), f"vhost {vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True)


def print_profile(profiler: cProfile.Profile, top: int = 25) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    print("\n--- cProfile of the eventshop bus run (by own time) ---")
    print(out.getvalue())


async def run(n: int, prefetch: int, rounds: int, url: str, profile: bool) -> list[Result]:
    events = envelopes(n)
    size = len(events[0].to_json())
    runs: dict[str, list[Result]] = {}
    with fresh_vhost(url) as (bench_url, where):
        print(
            f"bus benchmark: N={n} UserRegistered CloudEvents (~{size} B), prefetch {prefetch}, "
            f"persistent + publisher confirms, quorum queues, {rounds} round(s), {where}"
        )
        for r in range(rounds):
            tag = f"{r}-{uuid.uuid4().hex[:6]}"
            for contender in ("raw", "ours", "faststream"):
                if contender == "raw":
                    result = await run_raw(bench_url, events, prefetch, tag)
                elif contender == "ours":
                    result = await run_ours(
                        bench_url, events, prefetch, tag, profile=profile and r == 0
                    )
                else:
                    result = await run_faststream(bench_url, events, prefetch, tag)
                runs.setdefault(result.name, []).append(result)
                print(
                    f"  round {r + 1}: {result.name:<14} {result.rate:>8.0f} msgs/s "
                    f"(publish {result.publish_s:.2f}s, total {result.total_s:.2f}s, "
                    f"CPU {result.cpu_us_per_msg:.0f} us/msg)"
                )
    # Ratios are taken within each round (the three ran back to back under the same load)
    # and the median round is reported: the machine is shared, single rounds are noisy.
    raw, ours, fs = runs["raw aio-pika"], runs["eventshop bus"], runs["FastStream"]
    med = statistics.median
    print()
    print(f"{'median of ' + str(rounds):<16}{'msgs/s':>9}{'CPU us/msg':>12}")
    for name, rs in runs.items():
        print(
            f"{name:<16}{med(x.rate for x in rs):>9.0f}{med(x.cpu_us_per_msg for x in rs):>12.0f}"
        )
    per_round = [
        (o.rate / r.rate, o.rate / f.rate, o.cpu_s / r.cpu_s, o.cpu_s / f.cpu_s)
        for r, o, f in zip(raw, ours, fs, strict=True)
    ]
    print(
        f"\nours/raw = {med(x[0] for x in per_round):.2f}x   "
        f"ours/FastStream = {med(x[1] for x in per_round):.2f}x   (throughput, median of "
        f"per-round ratios)\nCPU per message: ours/raw {med(x[2] for x in per_round):.2f}x, "
        f"ours/FastStream {med(x[3] for x in per_round):.2f}x"
    )
    if rounds > 1:
        print(
            "per-round ours/raw: "
            + ", ".join(f"{x[0]:.2f}" for x in per_round)
            + "; ours/FastStream: "
            + ", ".join(f"{x[1]:.2f}" for x in per_round)
        )
    return [*raw, *ours, *fs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="events per contender (20000)")
    parser.add_argument("--prefetch", type=int, default=16, help="consumer prefetch (16)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile our bus's first round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    url = os.environ.get("AMQP_URL", DEFAULT_URL)
    asyncio.run(run(args.n, args.prefetch, args.rounds, url, args.profile))


if __name__ == "__main__":
    main()
