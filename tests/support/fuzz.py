"""What the fuzz tests of the HTTP services share: the real app served by uvicorn in a
thread (so requests pass through the same HTTP parsing as in production), schemathesis
over every operation of the app's own OpenAPI, and Hypothesis settings and strategies for
input a schema-driven generator would not try."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from events.settings import ServiceSettings
from tests.conftest import TEST_RETRY_DELAYS
from tests.support.servers import Rabbit, free_port

S = TypeVar("S", bound=ServiceSettings)


def examples(max_examples: int) -> settings:
    """Reproducible runs (derandomized, no example database) with no deadline: the
    machine is shared and slow, and a slow answer is not what these tests look for."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )


#: for each hand-written property
BOUNDED = examples(40)


# -- the app under fuzz ----------------------------------------------------------------------
@contextmanager
def serve_in_thread(app: FastAPI, name: str) -> Iterator[str]:
    """``app`` served by uvicorn on a free port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name=f"{name}-under-fuzz", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), f"the {name} app did not start"
        assert time.monotonic() < deadline, f"the {name} app did not start within 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def live_service(
    rabbit: Rabbit,
    mongodb_url: str,
    create_app: Callable[[S], FastAPI],
    settings_cls: type[S],
    **overrides: Any,
) -> Iterator[str]:
    """``python -m <service>`` in all but process: the app built with settings for a fresh
    vhost and database prefix, served by uvicorn on a free port. For module-scoped
    fixtures, where the per-test ``make_settings`` cannot be used."""
    with rabbit.fresh_vhost() as amqp_url:
        app_settings = settings_cls(
            amqp_url=amqp_url,
            mongodb_url=mongodb_url,
            mongodb_db_prefix=f"t{uuid.uuid4().hex[:10]}_",
            retry_delays=TEST_RETRY_DELAYS,
            outbox_poll_seconds=0.2,
            log_format="console",
            **overrides,
        )
        with serve_in_thread(create_app(app_settings), app_settings.service_name) as url:
            yield url


# -- schema-driven -------------------------------------------------------------------------
def fuzz_all_operations(
    schema: schemathesis.BaseSchema,
    mode: GenerationMode,
    expected_labels: set[str],
    *,
    per_operation: settings,
    headers: dict[str, str] | None = None,
) -> list[str]:
    """Call every operation of ``schema`` with requests it allows (POSITIVE) or forbids
    (NEGATIVE) and fail on any 5xx; returns the operations for which no forbidden request
    could be made (e.g. a path parameter that accepts any string).

    Every operation, not a list, so a new endpoint is fuzzed without asking.
    (``schemathesis.pytest.from_fixture`` would be the idiom, but it does not run on
    pytest 9.)"""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= expected_labels
    unsatisfiable: list[str] = []
    for operation in operations:
        inputs = (operation.body, operation.query, operation.headers, operation.path_parameters)
        if mode is GenerationMode.NEGATIVE and not any(len(part) for part in inputs):
            continue  # no input, so no invalid request to make

        @given(case=operation.as_strategy(generation_mode=mode))
        @per_operation
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            call()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.label
            unsatisfiable.append(operation.label)
    return unsatisfiable


# -- strategies ------------------------------------------------------------------------------
def json_bytes(value: object) -> bytes:
    # NaN and Infinity are not JSON, and lone surrogates come out as "\\ud800": both welcome.
    return json.dumps(value).encode()


def hex_text(text: str) -> str:
    return text.encode("utf-8", "replace").hex()


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
#: request bodies: bytes that are not JSON, and JSON of any shape
RAW_BODIES = st.binary(max_size=2048) | JSONISH.map(json_bytes)
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


def authorizations(*tokens: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Authorization header values: any latin-1 text, ``Bearer`` with junk, and ``Bearer``
    with each of the service's own kinds of malformed ``tokens`` (already prefixed)."""
    return st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")),
        st.text(max_size=300).map(lambda t: f"Bearer {hex_text(t)}"),
        *tokens,
    ).map(str.strip)  # a header value cannot start or end with blanks on the wire
