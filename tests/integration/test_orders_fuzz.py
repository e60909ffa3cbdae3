"""No input, however malformed, makes the orders service answer 5xx (contract §2).

The real app runs under uvicorn (in a thread) against the real broker and database, so
requests pass through the same HTTP parsing as in production. Schemathesis drives every
operation of the app's own OpenAPI with valid and invalid data, with and without a valid
token; Hypothesis adds order bodies built from real product ids, raw bytes, page cursors
and Authorization headers that a schema-driven generator would not try.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from orders.api import create_app
from orders.catalog import load_catalog
from orders.config import Settings
from tests.integration.test_orders_support import (  # noqa: F401 - pytest fixtures, used by name
    Issuer,
    JwksServer,
    bearer,
    orders_issuer,
    orders_users,
)
from tests.support.fuzz import (
    BOUNDED,
    CONTENT_TYPES,
    JSONISH,
    RAW_BODIES,
    authorizations,
    examples,
    fuzz_all_operations,
    hex_text,
    json_bytes,
    live_service,
)
from tests.support.servers import Rabbit

#: per operation, mode and caller of the schema-driven test
FEW = examples(20)
PRODUCT_IDS = [p.id for p in load_catalog()]


@pytest.fixture(scope="module")
def token(issuer: Issuer) -> str:
    return issuer.token("user-fuzz", "fuzz", exp=int(time.time()) + 3600)


@pytest.fixture(scope="module")
def live_orders(rabbit: Rabbit, mongodb_url: str, users: JwksServer) -> Iterator[str]:
    # nobody answers recommender.rpc here: keep the fallback quick
    with live_service(
        rabbit, mongodb_url, create_app, Settings, users_url=users.url, recommender_timeout=0.2
    ) as url:
        yield url


@pytest.fixture(scope="module")
def orders_openapi(live_orders: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_orders}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("signed_in", [True, False], ids=["token", "anonymous"])
def test_no_request_the_schema_allows_or_forbids_yields_5xx(
    orders_openapi: schemathesis.BaseSchema, token: str, mode: GenerationMode, signed_in: bool
) -> None:
    unsatisfiable = fuzz_all_operations(
        orders_openapi,
        mode,
        {
            "GET /products",
            "GET /products/{product_id}",
            "POST /orders",
            "GET /orders",
            "GET /orders/{order_id}",
            "GET /recommendations",
        },
        per_operation=FEW,
        headers=bearer(token) if signed_in else None,
    )
    # e.g. GET /products/{product_id}: any string is a valid id, so the schema forbids
    # nothing and there is no invalid request to make.
    assert len(unsatisfiable) <= 2, unsatisfiable


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
    # Encoded by hand: httpx's json= refuses NaN, which Python's JSON (and so a client) sends.
    response = httpx.post(
        live_orders + "/orders",
        content=json_bytes(body),
        headers=headers | {"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code < 500, response.text
    if response.status_code in (200, 201):
        assert isinstance(response.json()["total"], str)


@given(body=RAW_BODIES, content_type=CONTENT_TYPES)
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
    | JSONISH.map(lambda v: base64.urlsafe_b64encode(json_bytes(v)).decode())
    | st.tuples(st.datetimes(timezones=st.timezones()) | st.text(), st.text() | JSONISH).map(
        lambda pair: base64.urlsafe_b64encode(json_bytes([str(pair[0]), pair[1]])).decode()
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


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json_bytes(value)).decode().rstrip("=")


AUTHORIZATIONS = authorizations(
    st.tuples(JSONISH, JSONISH, st.text(max_size=40)).map(
        lambda parts: f"Bearer {_b64(parts[0])}.{_b64(parts[1])}.{hex_text(parts[2])}"
    ),
    st.tuples(st.dictionaries(st.sampled_from(["alg", "kid", "typ"]), JSONISH), JSONISH).map(
        lambda parts: f"Bearer {_b64(parts[0])}.{_b64(parts[1])}.c2ln"
    ),
)


@given(authorization=AUTHORIZATIONS)
@BOUNDED
def test_no_authorization_header_yields_5xx(live_orders: str, authorization: str) -> None:
    response = httpx.get(
        live_orders + "/orders",
        headers={"Authorization": authorization.encode("latin-1")},
        timeout=30,
    )
    assert response.status_code < 500, response.text
