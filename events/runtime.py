"""The life of an eventshop process: connect (waiting for dependencies), wire, run, and
shut down gracefully. Workers run through :func:`run_worker`; the HTTP services use the
same :class:`Runtime` from their FastAPI lifespan (see :mod:`events.web`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo import AsyncMongoClient

from events.bus import Broker, Consumer, Handler
from events.contracts import CloudEvent, Event
from events.logs import configure_logging
from events.outbox import Outbox
from events.rpc import RpcClient, RpcHandler, RpcServer
from events.settings import ServiceSettings
from events.store import Document, connect_mongo
from events.tracing import configure_tracing

log = logging.getLogger("events.runtime")

S = TypeVar("S", bound=ServiceSettings)
Bootstrap = Callable[["Runtime"], Awaitable[None]]


class Runtime:
    """Everything a running service holds: its broker connection, its MongoDB client, and
    the consumers, outbox relays and RPC endpoints its bootstrap registered."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.name = settings.service_name
        self.broker = Broker(settings.amqp_url, name=self.name)
        self._mongo: AsyncMongoClient[Document] | None = None
        self.consumers: list[Consumer] = []
        self.rpc_servers: list[RpcServer] = []
        self.rpc_clients: list[RpcClient] = []
        self.outboxes: list[Outbox] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._started = False

    @property
    def mongo(self) -> AsyncMongoClient[Document]:
        if self._mongo is None:
            raise RuntimeError("Runtime.connect() was not called")
        return self._mongo

    async def connect(self, *, attempts: int | None = None) -> None:
        """Connect to MongoDB and RabbitMQ, retrying with backoff until both answer."""
        self._mongo = await connect_mongo(
            self.settings.mongodb_url, name=self.name, attempts=attempts
        )
        await self.broker.connect(attempts=attempts)
        log.info("connected to MongoDB and RabbitMQ")

    # -- what a bootstrap registers -------------------------------------------------------
    def subscribe(
        self, subscriptions: Mapping[type[Event] | type[CloudEvent], Handler], ctx: Any
    ) -> Consumer:
        consumer = Consumer(
            self.broker,
            self.name,
            subscriptions,
            ctx,
            prefetch=self.settings.prefetch,
            retry_delays=self.settings.retry_delays,
        )
        self.consumers.append(consumer)
        return consumer

    def relay(self, outbox: Outbox) -> None:
        self.outboxes.append(outbox)

    def on_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Run ``close`` when stopping, after the consumers have finished their messages
        (e.g. the notifier's open SMTP connections)."""
        self._closers.append(close)

    def serve_rpc(self, queue: str, handler: RpcHandler) -> RpcServer:
        server = RpcServer(self.broker, queue, handler)
        self.rpc_servers.append(server)
        return server

    def rpc_client(self) -> RpcClient:
        client = RpcClient(self.broker, name=self.name)
        self.rpc_clients.append(client)
        return client

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        for client in self.rpc_clients:
            await client.start()
        for outbox in self.outboxes:
            self._tasks.append(
                asyncio.create_task(
                    outbox.run_relay(self.broker, poll_seconds=self.settings.outbox_poll_seconds),
                    name=f"{self.name}-outbox-relay",
                )
            )
        for consumer in self.consumers:
            await consumer.start()
        for server in self.rpc_servers:
            await server.start()
        self._started = True

    async def stop(self) -> None:
        """Stop consuming, finish messages in hand, then stop relays and close connections."""
        for consumer in self.consumers:
            await consumer.stop()
        for server in self.rpc_servers:
            await server.stop()
        for client in self.rpc_clients:
            await client.stop()
        for close in self._closers:
            try:
                await asyncio.wait_for(close(), timeout=5)
            except Exception:
                log.warning("a shutdown hook failed", exc_info=True)
        for outbox in self.outboxes:
            # One last flush so events committed just now do not wait for the next start;
            # brief, because the database may be stopping too (honcho stops all at once),
            # and anything left is published by the next start.
            try:
                await asyncio.wait_for(outbox.publish_pending(self.broker), timeout=1)
            except Exception:
                log.debug("final outbox flush failed", exc_info=True)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # PyMongo's server selection does not give way to a cancellation until its own
            # timeout when the database is gone (it stops alongside us under honcho); the
            # relay holds nothing that needs finishing, so do not wait for it.
            await asyncio.wait(self._tasks, timeout=1)
        await self.broker.close()
        if self._mongo is not None:
            # close() ends the server sessions, which waits for server selection when the
            # database has gone away first; do not let that hold up the exit.
            try:
                await asyncio.wait_for(self._mongo.close(), timeout=1)
            except TimeoutError:
                log.info("MongoDB did not answer while closing; leaving it")
        log.info("stopped")

    async def health(self) -> dict[str, bool]:
        """Readiness: database answers, broker connected, every consumer channel open."""
        checks = {"mongodb": False, "rabbitmq": self.broker.is_connected()}
        if self._mongo is not None:
            try:
                await asyncio.wait_for(self._mongo.admin.command("ping"), timeout=2)
                checks["mongodb"] = True
            except Exception:
                checks["mongodb"] = False
        if self._started:
            consumers = [await c.is_healthy() for c in self.consumers]
            checks["consumers"] = all(consumers) and all(s.is_healthy() for s in self.rpc_servers)
        return checks


def parse_args(name: str, description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {name}",
        description=description,
        epilog=(
            "Configured only through environment variables: AMQP_URL, MONGODB_URL, "
            "MONGODB_DB_PREFIX, LOG_LEVEL, LOG_FORMAT (json|console), PREFETCH, "
            "RETRY_DELAYS, METRICS_PORT and the service's own (see README)."
        ),
    )
    return parser.parse_args(argv)


def run_worker(
    settings_cls: type[S],
    bootstrap: Bootstrap,
    *,
    description: str,
    argv: Sequence[str] | None = None,
) -> None:
    """``python -m <worker>``: run until SIGTERM/SIGINT, then exit 0 after a clean stop."""
    settings = settings_cls()
    parse_args(settings.service_name, description, argv)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    configure_tracing(settings.service_name)
    sys.exit(_run(_serve_worker(settings, bootstrap)))


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed, as uvicorn already does for the HTTP services
    (it comes with uvicorn[standard]): bench.pipeline measured ~10% less CPU per order in
    the four workers. Plain asyncio where uvloop is not available (e.g. Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve_worker(settings: ServiceSettings, bootstrap: Bootstrap) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(settings)

    connecting = asyncio.create_task(runtime.connect())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        log.info("stopped before dependencies were reachable")
        return 0
    stopping.cancel()
    connecting.result()

    await bootstrap(runtime)
    await runtime.start()
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server = await serve_probe(runtime, settings.metrics_port)
    log.info("%s started", settings.service_name)
    code = 0
    unhealthy_since: float | None = None
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=5)
        except TimeoutError:
            pass
        # A consumer the broker cancelled is not re-created by the robust connection; when
        # the connection is fine but a consumer stays closed, exit and let the supervisor
        # restart us rather than sit idle while reporting nothing.
        if runtime.broker.is_connected() and not all(
            [await c.is_healthy() for c in runtime.consumers]
        ):
            unhealthy_since = unhealthy_since or loop.time()
            if loop.time() - unhealthy_since > 30:
                log.error("a consumer stayed closed for 30s while connected; exiting")
                code = 1
                break
        else:
            unhealthy_since = None
    log.info("shutting down")
    if metrics_server is not None:
        metrics_server.close()
    await runtime.stop()
    return code


async def serve_probe(runtime: Runtime, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint for workers: ``/metrics``, ``/health/live``, ``/health/ready``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else "/"
            status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path == "/health/live":
                status, ctype, body = "200 OK", "application/json", b'{"status":"ok"}'
            elif path == "/health/ready":
                import json

                checks = await runtime.health()
                ok = all(checks.values())
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype = "application/json"
                body = json.dumps(
                    {"status": "ok" if ok else "unavailable", "checks": checks}
                ).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except Exception:
            log.debug("probe request failed", exc_info=True)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", port)
    log.info("metrics and health on :%d", port)
    return server
