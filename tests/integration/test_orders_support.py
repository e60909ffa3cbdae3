"""Shared pieces of the orders tests (no tests here): an issuer of access tokens in the
users service's format, a JWKS endpoint standing in for the users service, the orders
app running against the test's broker and database, and the fixtures built from them.

The orders tests do not import ``users``: the services stay independent, so the tests
make their own Ed25519 key and serve its public half as a JWKS, as users would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from events.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from orders.api import create_app
from orders.config import Settings
from tests.support.service import running_app

JWKS_PATH = "/.well-known/jwks.json"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Issuer:
    """Signs access tokens like the users service: EdDSA, ``kid`` in the header, claims
    ``sub``, ``username``, ``iss``, ``aud``, ``iat``, ``exp``."""

    def __init__(self, kid: str | None = None) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.kid = kid or f"test-{uuid.uuid4().hex[:8]}"

    def jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self.key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "EdDSA"}

    def claims(self, user_id: str, username: str | None = None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user_id,
            "username": username or user_id,
            "iss": DEFAULT_ISSUER,
            "aud": DEFAULT_AUDIENCE,
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        user_id: str,
        username: str | None = None,
        *,
        kid: str | None = None,
        **overrides: Any,
    ) -> str:
        """``overrides`` replace claims; a claim overridden with None is left out."""
        return jwt.encode(
            self.claims(user_id, username, **overrides),
            self.key,
            algorithm="EdDSA",
            headers={"kid": kid or self.kid},
        )

    def unsigned_token(self, user_id: str) -> str:
        """``alg: none``: the oldest trick in the JWT book."""
        header = {"alg": "none", "typ": "JWT", "kid": self.kid}
        body = self.claims(user_id)
        return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}."

    def hmac_with_public_key_token(self, user_id: str) -> str:
        """HS256 keyed with the public key: works against verifiers that trust ``alg``."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.kid}
        signing_input = (
            f"{b64url(json.dumps(header).encode())}."
            f"{b64url(json.dumps(self.claims(user_id)).encode())}"
        )
        public = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(signature)}"


class JwksServer:
    """The users service's JWKS endpoint, alone, on a free port in a thread."""

    def __init__(self, issuers: Iterable[Issuer]) -> None:
        self.issuers = list(issuers)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                server.requests += 1
                body = json.dumps({"keys": [i.jwk() for i in server.issuers]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The users service goes away: the port stops answering."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@contextmanager
def jwks_server(*issuers: Issuer) -> Iterator[JwksServer]:
    server = JwksServer(issuers)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def watchdog(what: str, seconds: float = 60.0) -> AsyncIterator[None]:
    """Diagnostics only: when ``what`` takes longer than ``seconds``, print where every
    asyncio task is waiting (pytest-timeout shows threads, not tasks)."""

    async def bark() -> None:
        await asyncio.sleep(seconds)
        print(f"--- {what} still running after {seconds:.0f}s; asyncio tasks:", flush=True)
        for task in asyncio.all_tasks():
            if not task.done():
                print(f"task {task.get_name()}:", flush=True)
                task.print_stack(limit=25, file=sys.stdout)

    dog = asyncio.create_task(bark(), name=f"watchdog: {what}")
    try:
        yield
    finally:
        dog.cancel()


@asynccontextmanager
async def orders_api(
    make_settings: Callable[..., Any], users_url: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """``create_app`` with its lifespan running (consumer, relay, RPC client) and a client."""
    settings = make_settings(Settings, users_url=users_url, **overrides)
    async with AsyncExitStack() as stack:
        async with watchdog("orders start-up"):
            client = await stack.enter_async_context(running_app(create_app(settings)))
        try:
            yield client
        finally:
            async with watchdog("orders shutdown"):
                await stack.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def place(
    client: httpx.AsyncClient,
    token: str,
    items: list[tuple[str, int]],
    **extra: Any,
) -> httpx.Response:
    headers = bearer(token) | extra.pop("headers", {})
    body = {"items": [{"product_id": p, "quantity": q} for p, q in items], **extra}
    return await client.post("/orders", json=body, headers=headers)


async def placed(
    client: httpx.AsyncClient, token: str, items: list[tuple[str, int]]
) -> dict[str, Any]:
    response = await place(client, token, items)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


# -- fixtures ------------------------------------------------------------------------------
# A test module imports the ones it needs, with a noqa for F401: pytest finds them among the
# module's names and registers them as the module's own, under the ``name`` given here, so
# module scope still means one per test module. The functions are named apart from their
# fixtures so that a test's ``client`` argument does not shadow the import (F811).
@pytest.fixture(scope="module", name="issuer")
def orders_issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module", name="users")
def orders_users(issuer: Issuer) -> Iterator[JwksServer]:
    """The users service's JWKS endpoint, trusted by the orders app of ``client``."""
    with jwks_server(issuer) as server:
        yield server


@pytest.fixture(name="client")
async def orders_client(make_settings: Any, users: JwksServer) -> AsyncIterator[httpx.AsyncClient]:
    async with orders_api(make_settings, users.url) as c:
        yield c


@pytest.fixture(name="alice")
def alice_token(issuer: Issuer) -> str:
    return issuer.token("user-alice", "alice")
