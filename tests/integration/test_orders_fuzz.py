"""No input, however malformed, makes the orders service answer 5xx (contract §2).

The real app runs under uvicorn (in a thread) against the real broker and database, so
requests pass through the same HTTP parsing as in production. Schemathesis drives every
operation of the app's own OpenAPI with valid and invalid data, with and without a valid
token; Hypothesis adds order bodies built from real product ids, raw bytes, page cursors
and Authorization headers that a schema-driven generator would not try.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from orders.api import create_app
from orders.catalog import load_catalog
from orders.config import Settings
from tests.conftest import TEST_RETRY_DELAYS
from tests.integration.test_orders_support import Issuer, JwksServer, bearer, jwks_server
from tests.support.servers import Rabbit, free_port

BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
#: per operation, mode and caller of the schema-driven test
FEW = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
PRODUCT_IDS = [p.id for p in load_catalog()]


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def users(issuer: Issuer) -> Iterator[JwksServer]:
    with jwks_server(issuer) as server:
        yield server


@pytest.fixture(scope="module")
def token(issuer: Issuer) -> str:
    return issuer.token("user-fuzz", "fuzz", exp=int(time.time()) + 3600)


@pytest.fixture(scope="module")
def live_orders(rabbit: Rabbit, mongodb_url: str, users: JwksServer) -> Iterator[str]:
    """``python -m orders`` in all but process: the app served by uvicorn on a free port."""
    with rabbit.fresh_vhost() as amqp_url:
        app = create_app(
            Settings(
                amqp_url=amqp_url,
                mongodb_url=mongodb_url,
                mongodb_db_prefix=f"t{uuid.uuid4().hex[:10]}_",
                retry_delays=TEST_RETRY_DELAYS,
                outbox_poll_seconds=0.2,
                log_format="console",
                users_url=users.url,
                # nobody answers recommender.rpc here: keep the fallback quick
                recommender_timeout=0.2,
            )
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        thread = threading.Thread(target=server.run, name="orders-under-fuzz", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the orders app did not start"
            assert time.monotonic() < deadline, "the orders app did not start within 30 s"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def orders_openapi(live_orders: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_orders}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("signed_in", [True, False], ids=["token", "anonymous"])
def test_no_request_the_schema_allows_or_forbids_yields_5xx(
    orders_openapi: schemathesis.BaseSchema, token: str, mode: GenerationMode, signed_in: bool
) -> None:
    # Every operation of the app's own schema, so a new endpoint is fuzzed without asking.
    operations = [result.ok() for result in orders_openapi.get_all_operations()]
    assert {op.label for op in operations} >= {
        "GET /products",
        "GET /products/{product_id}",
        "POST /orders",
        "GET /orders",
        "GET /orders/{order_id}",
        "GET /recommendations",
    }
    headers = bearer(token) if signed_in else None
    unsatisfiable: list[str] = []
    for operation in operations:
        inputs = (operation.body, operation.query, operation.headers, operation.path_parameters)
        if mode is GenerationMode.NEGATIVE and not any(len(part) for part in inputs):
            continue  # no input, so no invalid request to make

        @given(case=operation.as_strategy(generation_mode=mode))
        @FEW
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            call()
        except Unsatisfiable:
            # e.g. GET /products/{product_id}: any string is a valid id, so the schema
            # forbids nothing and there is no invalid request to make.
            assert mode is GenerationMode.NEGATIVE, operation.label
            unsatisfiable.append(operation.label)
    assert len(unsatisfiable) <= 2, unsatisfiable


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
QUANTITIES = st.integers(min_value=-5, max_value=120) | st.integers() | JSONISH
LINES = st.fixed_dictionaries(
    {"product_id": st.sampled_from(PRODUCT_IDS) | st.text(max_size=30), "quantity": QUANTITIES},
    optional={"unit_price": JSONISH, "name": st.text(max_size=10)},
)
ORDER_BODIES = st.fixed_dictionaries(
    {"items": st.lists(LINES, max_size=55) | JSONISH},
    optional={
        "payment_method": st.sampled_from(["card_ok", "card_declined", "card_flaky"]) | JSONISH,
        "total": JSONISH,
    },
)


@given(body=ORDER_BODIES, key=st.none() | st.text(max_size=300))
@BOUNDED
def test_no_order_body_yields_5xx(live_orders: str, token: str, body: Any, key: str | None) -> None:
    headers = bearer(token)
    if key is not None:
        headers["Idempotency-Key"] = key.encode("utf-8", "replace").hex()[:300] or "k"
    response = httpx.post(live_orders + "/orders", json=body, headers=headers, timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code in (200, 201):
        assert isinstance(response.json()["total"], str)


@given(
    body=st.binary(max_size=2048) | JSONISH.map(_json),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
)
@BOUNDED
def test_no_raw_body_yields_5xx(
    live_orders: str, token: str, body: bytes, content_type: str
) -> None:
    response = httpx.post(
        live_orders + "/orders",
        content=body,
        headers=bearer(token) | {"content-type": content_type},
        timeout=30,
    )
    assert response.status_code < 500, response.text


CURSORS = (
    st.text(max_size=100)
    | JSONISH.map(lambda v: base64.urlsafe_b64encode(_json(v)).decode())
    | st.tuples(st.datetimes(timezones=st.timezones()) | st.text(), st.text() | JSONISH).map(
        lambda pair: base64.urlsafe_b64encode(_json([str(pair[0]), pair[1]])).decode()
    )
)


@given(cursor=CURSORS, limit=st.integers(min_value=-1, max_value=101))
@BOUNDED
def test_no_page_cursor_yields_5xx(live_orders: str, token: str, cursor: str, limit: int) -> None:
    response = httpx.get(
        live_orders + "/orders",
        params={"cursor": cursor, "limit": limit},
        headers=bearer(token),
        timeout=30,
    )
    assert response.status_code < 500, response.text


def _hex(text: str) -> str:
    return text.encode("utf-8", "replace").hex()


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(_json(value)).decode().rstrip("=")


AUTHORIZATIONS = (
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
    | st.text(max_size=300).map(lambda t: f"Bearer {_hex(t)}")
    | st.tuples(JSONISH, JSONISH, st.text(max_size=40)).map(
        lambda parts: f"Bearer {_b64(parts[0])}.{_b64(parts[1])}.{_hex(parts[2])}"
    )
    | st.tuples(st.dictionaries(st.sampled_from(["alg", "kid", "typ"]), JSONISH), JSONISH).map(
        lambda parts: f"Bearer {_b64(parts[0])}.{_b64(parts[1])}.c2ln"
    )
).map(str.strip)


@given(authorization=AUTHORIZATIONS)
@BOUNDED
def test_no_authorization_header_yields_5xx(live_orders: str, authorization: str) -> None:
    response = httpx.get(
        live_orders + "/orders",
        headers={"Authorization": authorization.encode("latin-1")},
        timeout=30,
    )
    assert response.status_code < 500, response.text
