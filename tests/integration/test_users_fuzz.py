"""No input, however malformed, makes the users service answer 5xx (contract §2).

The real app runs under uvicorn (in a thread) against the real broker and database, so
requests go through the same HTTP parsing as in production. Schemathesis drives every
operation of the app's own OpenAPI with valid and invalid data; Hypothesis adds raw bytes,
odd content types and odd headers that a schema-driven generator would not try.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.conftest import TEST_RETRY_DELAYS
from tests.support.servers import Rabbit, free_port
from users.api import create_app
from users.config import Settings

FAST_ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456, "argon2_parallelism": 1}
BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
#: per operation and mode of the schema-driven test
FEW = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@pytest.fixture(scope="module")
def live_users(rabbit: Rabbit, mongodb_url: str) -> Iterator[str]:
    """``python -m users`` in all but process: the app served by uvicorn on a free port."""
    with rabbit.fresh_vhost() as amqp_url:
        app = create_app(
            Settings(
                amqp_url=amqp_url,
                mongodb_url=mongodb_url,
                mongodb_db_prefix=f"t{uuid.uuid4().hex[:10]}_",
                retry_delays=TEST_RETRY_DELAYS,
                outbox_poll_seconds=0.2,
                log_format="console",
                **FAST_ARGON2,
            )
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        thread = threading.Thread(target=server.run, name="users-under-fuzz", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the users app did not start"
            assert time.monotonic() < deadline, "the users app did not start within 30 s"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def users_openapi(live_users: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_users}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_the_schema_allows_or_forbids_yields_5xx(
    users_openapi: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    # Every operation of the app's own schema, so a new endpoint is fuzzed without asking.
    # (schemathesis.pytest.from_fixture would be the idiom, but it does not run on pytest 9.)
    operations = [result.ok() for result in users_openapi.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /users",
        "POST /auth/token",
        "GET /users/me",
        "GET /.well-known/jwks.json",
    }
    for operation in operations:
        inputs = (operation.body, operation.query, operation.headers, operation.path_parameters)
        if mode is GenerationMode.NEGATIVE and not any(len(part) for part in inputs):
            continue  # no input, so no invalid request to make

        @given(case=operation.as_strategy(generation_mode=mode))
        @FEW
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        call()


def _json(value: object) -> bytes:
    # NaN and Infinity are not JSON, and lone surrogates come out as "\\ud800": both welcome.
    return json.dumps(value).encode()


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "text/plain",
        "",
    ]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
FIELDS = st.sampled_from(["username", "email", "password", "grant_type"]) | st.text(max_size=8)
BODIES = (
    st.binary(max_size=2048)
    | JSONISH.map(_json)
    | st.dictionaries(FIELDS, st.text(max_size=300) | JSONISH, max_size=5).map(_json)
)


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


def _hex(text: str) -> str:
    return text.encode("utf-8", "replace").hex()


AUTHORIZATIONS = (
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
    | st.text(max_size=300).map(lambda t: f"Bearer {_hex(t)}")
    | st.lists(st.text(max_size=60), min_size=3, max_size=3).map(
        lambda parts: "Bearer " + ".".join(map(_hex, parts))
    )
).map(str.strip)  # a header value cannot start or end with blanks on the wire


@given(authorization=AUTHORIZATIONS)
@BOUNDED
def test_no_authorization_header_yields_5xx(live_users: str, authorization: str) -> None:
    response = httpx.get(
        live_users + "/users/me",
        headers={"Authorization": authorization.encode("latin-1")},
        timeout=30,
    )
    assert response.status_code < 500, response.text
