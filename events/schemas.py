"""Export the event contracts: one JSON Schema per event type (and the CloudEvents
envelope) plus the AsyncAPI document of the bus.

The files are generated, committed under ``schemas/`` and checked by a unit test, so a
change to a model that is not reflected in the committed schemas fails CI::

    python -m events schemas             # (re)write ./schemas
    python -m events schemas --check     # exit 1 when ./schemas is out of date
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from events.asyncapi import document
from events.contracts import REGISTRY, CloudEvent, Event
from events.topology import SERVICES

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.json"


def schema_file(name: str) -> str:
    return f"{name}.schema.json"


def event_schema(cls: type[Event]) -> dict[str, Any]:
    """The JSON Schema of ``data`` for one event type, as it is serialised on the wire
    (money as a decimal string). Extra properties stay allowed: adding an optional field
    is a compatible change."""
    name = cls.type_name()
    publishers = [s.name for s in SERVICES if cls.ROUTING_KEY in s.publishes]
    schema = cls.model_json_schema(mode="serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_file(name),
        **schema,
        "description": f"`data` of the CloudEvent of type `{name}`, published with routing "
        f"key `{cls.ROUTING_KEY}` by {', '.join(publishers) or 'nobody yet'}.",
        "x-cloudevents-type": name,
        "x-routing-key": cls.ROUTING_KEY,
    }


def envelope_schema() -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_file("CloudEvent"),
        **CloudEvent.model_json_schema(mode="serialization"),
        "description": "A CloudEvents 1.0 event in structured JSON mode, as every eventshop "
        "event travels (content type application/cloudevents+json); `data` follows the "
        "schema named by `type`.",
    }


def render() -> dict[str, str]:
    """File name -> content of every generated file (deterministic)."""
    files = {schema_file("CloudEvent"): envelope_schema()}
    for name, cls in sorted(REGISTRY.items()):
        files[schema_file(name)] = event_schema(cls)
    files[ASYNCAPI_FILE] = document()
    return {
        name: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for name, doc in files.items()
    }


def write(out: Path) -> list[Path]:
    """Write every generated file into ``out`` (created if missing); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(out: Path) -> list[str]:
    """What in ``out`` differs from a fresh generation: missing, changed, or left over
    (a ``*.json`` file no model produces any more). Empty when up to date."""
    expected = render()
    problems = []
    for name, text in expected.items():
        path = out / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: out of date")
    if out.is_dir():
        problems += [
            f"{p.name}: no longer generated"
            for p in sorted(out.glob("*.json"))
            if p.name not in expected
        ]
    return problems
