"""No input, however malformed, makes the users service answer 5xx (contract §2).

The real app runs under uvicorn (in a thread) against the real broker and database, so
requests go through the same HTTP parsing as in production. Schemathesis drives every
operation of the app's own OpenAPI with valid and invalid data; Hypothesis adds raw bytes,
odd content types and odd headers that a schema-driven generator would not try.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

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
from users.api import create_app
from users.config import Settings

FAST_ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456, "argon2_parallelism": 1}
#: per operation and mode of the schema-driven test
FEW = examples(25)


@pytest.fixture(scope="module")
def live_users(rabbit: Rabbit, mongodb_url: str) -> Iterator[str]:
    with live_service(rabbit, mongodb_url, create_app, Settings, **FAST_ARGON2) as url:
        yield url


@pytest.fixture(scope="module")
def users_openapi(live_users: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_users}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_the_schema_allows_or_forbids_yields_5xx(
    users_openapi: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    unsatisfiable = fuzz_all_operations(
        users_openapi,
        mode,
        {"POST /users", "POST /auth/token", "GET /users/me", "GET /.well-known/jwks.json"},
        per_operation=FEW,
    )
    assert unsatisfiable == []  # every operation here takes input its schema can forbid


FIELDS = st.sampled_from(["username", "email", "password", "grant_type"]) | st.text(max_size=8)
FIELD_OBJECTS = st.dictionaries(FIELDS, st.text(max_size=300) | JSONISH, max_size=5)
BODIES = RAW_BODIES | FIELD_OBJECTS.map(json_bytes)


@given(
    path=st.sampled_from(["/users", "/auth/token"]),
    body=BODIES,
    content_type=CONTENT_TYPES,
)
@BOUNDED
def test_no_raw_body_yields_5xx(live_users: str, path: str, body: bytes, content_type: str) -> None:
    response = httpx.post(
        live_users + path, content=body, headers={"content-type": content_type}, timeout=30
    )
    assert response.status_code < 500, response.text


@given(
    form=st.dictionaries(FIELDS, st.text(max_size=300), max_size=5),
)
@BOUNDED
def test_no_login_form_yields_5xx(live_users: str, form: dict[str, str]) -> None:
    response = httpx.post(live_users + "/auth/token", data=form, timeout=30)
    assert response.status_code < 500, response.text


AUTHORIZATIONS = authorizations(
    st.lists(st.text(max_size=60), min_size=3, max_size=3).map(
        lambda parts: "Bearer " + ".".join(map(hex_text, parts))
    )
)


@given(authorization=AUTHORIZATIONS)
@BOUNDED
def test_no_authorization_header_yields_5xx(live_users: str, authorization: str) -> None:
    response = httpx.get(
        live_users + "/users/me",
        headers={"Authorization": authorization.encode("latin-1")},
        timeout=30,
    )
    assert response.status_code < 500, response.text
