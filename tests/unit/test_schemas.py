"""The exported contracts: JSON Schemas per event, the AsyncAPI document, and the topology
table they are built from (no I/O besides reading the committed files)."""

from __future__ import annotations

import importlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from events import schemas
from events.asyncapi import document
from events.bus import Consumer
from events.cli import main
from events.contracts import (
    CONTENT_TYPE,
    EXCHANGE,
    REGISTRY,
    CloudEvent,
    OrderCreated,
    OrderLine,
)
from events.topology import BY_NAME, SERVICES, consumers

COMMITTED = Path(__file__).resolve().parents[2] / "schemas"

#: Contract §1, "consumes" and "publishes" columns, and §3 RPC — copied here on purpose:
#: the topology table in events/ must say exactly this.
CONTRACT_TABLE = {
    "users": ((), ("user.registered",)),
    "orders": (("payment.completed", "payment.failed"), ("order.created",)),
    "payments": (("order.created",), ("payment.completed", "payment.failed")),
    "notifier": (
        ("user.registered", "order.created", "payment.completed", "payment.failed"),
        (),
    ),
    "analytics": (("#",), ()),
    "recommender": (("order.created", "payment.completed"), ()),
}


def order_created() -> OrderCreated:
    return OrderCreated(
        order_id="o1",
        user_id="u1",
        username="ann",
        items=(OrderLine(product_id="p1", quantity=2, unit_price=Decimal("9.95")),),
        total=Decimal("19.90"),
        currency="EUR",
    )


# -- committed files -------------------------------------------------------------------------
def test_committed_schemas_match_a_fresh_generation(tmp_path: Path) -> None:
    # given a fresh generation into an empty directory
    schemas.write(tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir()}
    # then the committed schemas/ holds exactly the same files, byte for byte
    committed = {p.name: p.read_text() for p in COMMITTED.iterdir() if p.suffix == ".json"}
    assert sorted(committed) == sorted(fresh), "run `python -m events schemas` and commit"
    for name, text in fresh.items():
        assert committed[name] == text, f"schemas/{name} is stale: run `python -m events schemas`"


def test_schemas_check_reports_a_stale_file(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    assert main(["schemas", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "UserRegistered.schema.json").write_text("{}\n")
    (tmp_path / "Gone.schema.json").write_text("{}\n")
    assert schemas.stale(tmp_path) == [
        "UserRegistered.schema.json: out of date",
        "Gone.schema.json: no longer generated",
    ]
    assert main(["schemas", "--out", str(tmp_path), "--check"]) == 1


def test_generation_is_deterministic() -> None:
    assert schemas.render() == schemas.render()


# -- JSON Schemas ----------------------------------------------------------------------------
def test_every_event_type_and_the_envelope_have_a_schema_file() -> None:
    names = set(schemas.render())
    assert {f"{t}.schema.json" for t in REGISTRY} | {"CloudEvent.schema.json"} <= names


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_event_schema_is_valid_2020_12_and_names_its_routing_key(name: str) -> None:
    schema = schemas.event_schema(REGISTRY[name])
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["x-routing-key"] == REGISTRY[name].ROUTING_KEY
    assert schema["x-cloudevents-type"] == name
    # adding an optional field is a compatible change: extra properties stay allowed
    assert schema.get("additionalProperties", True) is not False


def test_serialised_event_validates_against_its_schema_and_money_is_a_string() -> None:
    validator = jsonschema.Draft202012Validator(schemas.event_schema(OrderCreated))
    data = order_created().model_dump(mode="json")
    validator.validate(data)
    assert data["total"] == "19.90"
    # a float amount is what the contract forbids; the schema says so too
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**data, "total": 19.9})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**data, "total": "19.999"})


def test_envelope_on_the_wire_validates_against_the_envelope_schema() -> None:
    envelope = CloudEvent.wrap(order_created(), source="/orders", correlationid="c1")
    jsonschema.Draft202012Validator(schemas.envelope_schema()).validate(
        json.loads(envelope.to_json())
    )


# -- AsyncAPI --------------------------------------------------------------------------------
def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_asyncapi_reference_resolves() -> None:
    doc = document()
    refs = _refs(doc)
    assert refs
    for ref in refs:
        _resolve(doc, ref)


def test_each_operation_sends_or_receives_messages_of_its_own_channel() -> None:
    doc = document()
    for name, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), name
        channel_ref = op["channel"]["$ref"]
        for message in op["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), name


def test_asyncapi_describes_the_topic_exchange_and_each_routing_key() -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["defaultContentType"] == CONTENT_TYPE
    for name, cls in REGISTRY.items():
        channel = doc["channels"][cls.ROUTING_KEY]
        binding = channel["bindings"]["amqp"]
        assert binding["is"] == "routingKey"
        assert binding["exchange"] == {
            "name": EXCHANGE,
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": "/",
        }
        message = doc["components"]["messages"][name]
        assert message["contentType"] == CONTENT_TYPE
        envelope, specific = message["payload"]["allOf"]
        assert envelope == {"$ref": "#/components/schemas/CloudEvent"}
        assert specific["properties"]["data"] == {"$ref": f"#/components/schemas/{name}"}
        assert specific["properties"]["type"] == {"const": name}


@pytest.mark.parametrize("service", [s.name for s in consumers()])
def test_asyncapi_describes_each_consumer_queue_its_retries_and_its_dlq(service: str) -> None:
    doc = document()
    topology = BY_NAME[service]
    queue = doc["channels"][service]
    assert queue["bindings"]["amqp"]["queue"]["name"] == service
    assert queue["bindings"]["amqp"]["queue"]["durable"] is True
    assert queue["x-queue-arguments"]["x-queue-type"] == "quorum"
    assert [b["routingKey"] for b in queue["x-exchange-bindings"]] == list(topology.consumes)
    for retry in topology.retry_queues():
        assert doc["channels"][retry]["x-queue-arguments"]["x-dead-letter-routing-key"] == service
    assert f"{service}.dlq" in doc["channels"]
    assert doc["operations"][f"{service}.consume"]["action"] == "receive"


def test_asyncapi_describes_the_recommender_rpc() -> None:
    doc = document()
    assert doc["channels"]["recommender.rpc"]["bindings"]["amqp"]["queue"]["name"] == (
        "recommender.rpc"
    )
    assert doc["operations"]["recommender.answer.recommender.rpc"]["action"] == "receive"
    assert doc["operations"]["orders.call.recommender.rpc"]["action"] == "send"


def test_publish_operations_follow_the_topology() -> None:
    doc = document()
    sends = {
        (op["tags"][0]["name"], op["channel"]["$ref"].rsplit("/", 1)[1])
        for op in doc["operations"].values()
        if op["action"] == "send" and "publish" in op["title"]
    }
    expected = {(s.name, key) for s in SERVICES for key in s.publishes}
    assert sends == expected


# -- topology --------------------------------------------------------------------------------
def test_topology_table_matches_the_contract() -> None:
    table = {s.name: (s.consumes, s.publishes) for s in SERVICES}
    assert {k: (set(c), set(p)) for k, (c, p) in table.items()} == {
        k: (set(c), set(p)) for k, (c, p) in CONTRACT_TABLE.items()
    }
    assert BY_NAME["recommender"].serves_rpc == ("recommender.rpc",)
    assert BY_NAME["orders"].calls_rpc == ("recommender.rpc",)


@pytest.mark.parametrize("service", [s.name for s in consumers()])
def test_topology_matches_the_service_subscriptions(service: str) -> None:
    # Each service declares its own SUBSCRIPTIONS; the documented topology must agree.
    try:
        handlers = importlib.import_module(f"{service}.handlers")
    except ModuleNotFoundError:
        pytest.skip(f"{service}.handlers does not exist yet")
    subscriptions = getattr(handlers, "SUBSCRIPTIONS", None)
    if subscriptions is None:
        pytest.skip(f"{service}.handlers has no SUBSCRIPTIONS yet")
    bound = Consumer(None, service, subscriptions, None).routing_keys  # type: ignore[arg-type]
    assert sorted(bound) == sorted(BY_NAME[service].consumes)


# -- CLI surface -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["schemas", "--help"],
        ["dlq", "--help"],
        ["dlq", "list", "--help"],
        ["dlq", "show", "--help"],
        ["dlq", "replay", "--help"],
        ["dlq", "purge", "--help"],
        ["outbox", "status", "--help"],
    ],
)
def test_help_works(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage: python -m events" in capsys.readouterr().out


def test_replay_needs_an_id_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dlq", "replay", "payments"])
    assert exit_.value.code == 2
    assert "--id" in capsys.readouterr().err
