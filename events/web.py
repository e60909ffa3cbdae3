"""What both HTTP services share: the runtime in the FastAPI lifespan, correlation ids,
health and metrics endpoints, and error handling that never leaks a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events import logs
from events.runtime import Bootstrap, Runtime, parse_args
from events.settings import ServiceSettings
from events.tracing import configure_tracing

log = logging.getLogger("events.web")

S = TypeVar("S", bound=ServiceSettings)
CORRELATION_HEADER = "X-Correlation-ID"

REQUESTS = Counter(
    "eventshop_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "eventshop_http_request_seconds", "HTTP request latency", ["service", "method", "route"]
)


def runtime_lifespan(settings: ServiceSettings, bootstrap: Bootstrap) -> Callable[[FastAPI], Any]:
    """A lifespan that connects (waiting for MongoDB and RabbitMQ), wires the service with
    ``bootstrap`` and starts its consumers and relays; on shutdown, stops them gracefully."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        await _connect_or_exit_on_signal(runtime)
        await bootstrap(runtime)
        await runtime.start()
        log.info("%s ready", settings.service_name)
        try:
            yield
        finally:
            await runtime.stop()

    return lifespan


async def _connect_or_exit_on_signal(runtime: Runtime) -> None:
    """Wait for MongoDB and RabbitMQ; a SIGTERM while waiting exits 0 at once.

    uvicorn only looks at its exit flag once startup has finished, so without this a
    service whose dependencies are down would ignore SIGTERM until they came up.
    """
    if threading.current_thread() is not threading.main_thread():
        await runtime.connect()  # tests drive the lifespan themselves
        return
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    connecting = asyncio.ensure_future(runtime.connect())
    for sig in signals:
        loop.add_signal_handler(sig, connecting.cancel)
    try:
        await connecting
    except asyncio.CancelledError:
        log.info("stopped before dependencies were reachable")
        logging.shutdown()
        os._exit(0)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous[sig])


class CorrelationMiddleware:
    """Take ``X-Correlation-ID`` from the request (or make one), bind it to every log line
    and event of the request, return it in the response, and count the request."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(CORRELATION_HEADER.lower().encode())
        correlationid = _clean(incoming.decode("latin-1")) if incoming else None
        correlationid = correlationid or str(uuid.uuid4())
        status = 500
        started = time.perf_counter()

        async def send_with_header(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((CORRELATION_HEADER.encode(), correlationid.encode()))
                message["headers"] = headers
            await send(message)

        with logs.bind(correlationid=correlationid):
            try:
                await self.app(scope, receive, send_with_header)
            finally:
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                REQUESTS.labels(self.service, scope["method"], path, str(status)).inc()
                LATENCY.labels(self.service, scope["method"], path).observe(
                    time.perf_counter() - started
                )


def _clean(value: str) -> str | None:
    value = value.strip()
    if 0 < len(value) <= 128 and all(c.isalnum() or c in "-_.:" for c in value):
        return value
    return None


def common_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready")
    async def ready(request: Request) -> JSONResponse:
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        checks = await runtime.health() if runtime is not None else {"started": False}
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def install_common(app: FastAPI, service: str, *, max_body_bytes: int = 65536) -> None:
    """Health, metrics, correlation ids, a body size limit and error handlers that never
    answer bad input with a 5xx."""
    app.include_router(common_router())
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CorrelationMiddleware, service=service)
    app.add_exception_handler(RequestValidationError, validation_problem)

    @app.exception_handler(ConnectionFailure)
    async def database_down(request: Request, exc: ConnectionFailure) -> JSONResponse:
        log.warning("database unreachable: %s", exc)
        return JSONResponse(
            {"detail": "the database is unreachable; try again shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(PyMongoError)
    async def database_error(request: Request, exc: PyMongoError) -> JSONResponse:
        log.error("database error: %r", exc)
        return JSONResponse({"detail": "internal database error"}, status_code=500)


async def validation_problem(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 with per-field detail, minus the rejected ``input`` (it would echo
    passwords back) and made safe to encode: FastAPI's own handler answers 500 when the
    input is not valid UTF-8 or holds a NaN, which Python's JSON parser accepts."""
    errors = []
    for error in exc.errors() if isinstance(exc, RequestValidationError) else []:
        entry = {k: _jsonable(v) for k, v in error.items() if k not in ("input", "url")}
        errors.append(entry)
    body = json.dumps({"detail": errors}, ensure_ascii=True, allow_nan=False)
    return Response(body, status_code=422, media_type="application/json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413 before anything buffers them, whether the
    client announced the length or streams it in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI turns other errors while reading the body into 400.
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": _TooLarge(self.max_bytes).detail})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit} bytes)")


def run_http(
    settings_cls: type[S],
    create_app: Callable[[S], FastAPI],
    *,
    port: Callable[[S], int],
    description: str,
    argv: Sequence[str] | None = None,
) -> None:
    """``python -m <http service>``: serve with uvicorn until SIGTERM, then exit 0."""
    settings = settings_cls()
    parse_args(settings.service_name, description, argv)
    logs.configure_logging(settings.service_name, settings.log_level, settings.log_format)
    configure_tracing(settings.service_name)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="0.0.0.0",
        port=port(settings),
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    # Once shut down, uvicorn re-raises the signal that stopped it to whatever handler was
    # there before; with the default one the process would die of SIGTERM (status 143)
    # after a clean stop. A no-op handler (not SIG_IGN, which child processes would
    # inherit) swallows the replay, so the process exits 0 as the contract says.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    server.run()
    sys.exit(0 if server.started else 1)
