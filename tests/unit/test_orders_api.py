"""Small pieces of the orders API that need no server: page cursors and error bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.exceptions import RequestValidationError

from events.web import _jsonable
from orders.api import decode_cursor, encode_cursor
from orders.store import page_key


def test_a_cursor_round_trips_and_is_opaque() -> None:
    key = (datetime(2026, 12, 4, 15, 0, 0, 123000, tzinfo=UTC), "3f1c-order")

    cursor = encode_cursor(key)

    assert decode_cursor(cursor) == key
    assert "order" not in cursor and "=" not in cursor


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGpzb24", "WzFd", "WyIyMDI2LTEyLTA0IiwieCJd", "eyJhIjoxLCJiIjoyfQ"],
    ids=["empty", "not base64", "not json", "one element", "naive time", "object"],
)
def test_a_cursor_this_api_did_not_issue_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(RequestValidationError) as raised:
        decode_cursor(cursor)

    assert raised.value.errors()[0]["loc"] == ("query", "cursor")


def test_error_bodies_survive_inputs_json_cannot_carry() -> None:
    assert _jsonable({"input": b"\x80ok", "ctx": {"n": float("nan")}, "loc": ("body", 0)}) == {
        "input": "\ufffdok",
        "ctx": {"n": "nan"},
        "loc": ["body", 0],
    }


def test_page_keys_sort_like_creation_time_then_id() -> None:
    t = datetime(2026, 12, 4, 15, 0, 0, 123456, tzinfo=UTC)
    keys = [
        (t.replace(year=999), "z"),
        (t.replace(microsecond=0), "z"),
        (t, "a"),
        (t, "b"),
        (t.replace(second=1), "a"),
    ]

    assert sorted(keys, key=page_key) == keys
    assert page_key((t, "id-1")) == "2026-12-04T15:00:00.123Z|id-1"
