"""The AsyncAPI 3.0 document of eventshop's bus, built from the event models and the
topology table (:mod:`events.topology`) — never written by hand, so it cannot drift.

It describes the exchange ``shop.events``, one channel per routing key with its
CloudEvents message, each service's quorum queue with its bindings, the retry queues and
the parking lot (``<service>.dlq``) with the headers the bus writes, and the recommender's
request/reply queue. ``python -m events schemas`` writes it next to the JSON Schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from events.bus import (
    H_ATTEMPT,
    H_ERROR,
    H_ERROR_TYPE,
    H_FAILED_AT,
    H_ROUTING_KEY,
    H_SERVICE,
    dlq_name,
)
from events.contracts import CONTENT_TYPE, EXCHANGE, REGISTRY, CloudEvent, Event
from events.topology import (
    DEFAULT_RETRY_DELAYS,
    EVENTS_BY_ROUTING_KEY,
    EVERY_EVENT,
    RECOMMENDER_RPC,
    SERVICES,
    ServiceTopology,
    consumers,
    events_consumed_by,
)

ASYNCAPI_VERSION = "3.0.0"
#: Version of the event contract this document describes (bump on a new event ``type``).
CONTRACT_VERSION = "1.0.0"
AMQP_BINDING_VERSION = "0.3.0"

Json = dict[str, Any]


def _ref(*path: str) -> Json:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def component_schemas() -> Json:
    """JSON Schemas of the envelope and every event (as serialised on the wire), with their
    shared definitions (``OrderLine``), addressed as ``#/components/schemas/<Name>``."""
    models: list[type[Event] | type[CloudEvent]] = [CloudEvent, *REGISTRY.values()]
    _, top = models_json_schema(
        [(m, "serialization") for m in models], ref_template="#/components/schemas/{model}"
    )
    defs: Json = top["$defs"]
    defs.update(_HEADER_SCHEMAS)
    defs.update(_RPC_SCHEMAS)
    return dict(sorted(defs.items()))


def _exchange_binding() -> Json:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {
                "name": EXCHANGE,
                "type": "topic",
                "durable": True,
                "autoDelete": False,
                "vhost": "/",
            },
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _queue_binding(name: str, *, durable: bool = True) -> Json:
    return {
        "amqp": {
            "is": "queue",
            "queue": {
                "name": name,
                "durable": durable,
                "exclusive": False,
                "autoDelete": False,
                "vhost": "/",
            },
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _event_message(cls: type[Event]) -> Json:
    name = cls.type_name()
    publishers = [s.name for s in SERVICES if cls.ROUTING_KEY in s.publishes]
    return {
        "name": name,
        "title": name,
        "summary": f"CloudEvent of type {name}, published with routing key {cls.ROUTING_KEY} "
        f"by {', '.join(publishers) or 'nobody yet'}.",
        "contentType": CONTENT_TYPE,
        "correlationId": {
            "description": "Carried from the HTTP request that started the chain.",
            "location": "$message.payload#/correlationid",
        },
        "payload": {
            "allOf": [
                _ref("components", "schemas", "CloudEvent"),
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": name},
                        "data": _ref("components", "schemas", name),
                    },
                    "required": ["type", "data"],
                },
            ]
        },
        "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP_BINDING_VERSION}},
    }


_HEADER_SCHEMAS: Json = {
    "RetryHeaders": {
        "title": "RetryHeaders",
        "description": "AMQP headers of a message waiting in a retry queue.",
        "type": "object",
        "properties": {
            H_ATTEMPT: {"type": "integer", "minimum": 2, "description": "The attempt it waits for"},
            H_ROUTING_KEY: {"type": "string", "description": "Routing key it was published with"},
            H_SERVICE: {"type": "string", "description": "The consumer that failed"},
            H_ERROR: {"type": "string", "description": "'<ExceptionType>: <message>'"},
            H_ERROR_TYPE: {"type": "string"},
            H_FAILED_AT: {"type": "string", "format": "date-time"},
        },
        "required": [H_ATTEMPT, H_ROUTING_KEY, H_ERROR],
    },
    "ParkedHeaders": {
        "title": "ParkedHeaders",
        "description": "AMQP headers of a message parked in <service>.dlq: the last error, the "
        "attempt that failed and the original routing key. `python -m events dlq` reads them.",
        "type": "object",
        "properties": {
            H_ATTEMPT: {"type": "integer", "minimum": 1, "description": "The attempt that failed"},
            H_ROUTING_KEY: {"type": "string", "description": "Routing key it was published with"},
            H_SERVICE: {"type": "string", "description": "The consumer that parked it"},
            H_ERROR: {"type": "string", "description": "'<ExceptionType>: <message>'"},
            H_ERROR_TYPE: {"type": "string"},
            H_FAILED_AT: {"type": "string", "format": "date-time"},
        },
        "required": [H_ATTEMPT, H_ROUTING_KEY, H_ERROR],
    },
}

_RPC_SCHEMAS: Json = {
    "RecommendationRequest": {
        "title": "RecommendationRequest",
        "type": "object",
        "properties": {
            "user_id": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20},
        },
        "required": ["user_id", "limit"],
    },
    "RecommendationReply": {
        "title": "RecommendationReply",
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"product_id": {"type": "string"}, "score": {"type": "number"}},
                    "required": ["product_id", "score"],
                },
            },
            "strategy": {"type": "string"},
            "error": {"type": "string", "description": "Set instead of items when it failed"},
        },
    },
}


def _wrapper_message(name: str, summary: str, headers: str) -> Json:
    """A message as it sits in a retry queue or the DLQ: any event (or, in the DLQ, bytes
    that were not an event at all) plus the headers the bus added."""
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": CONTENT_TYPE,
        "headers": _ref("components", "schemas", headers),
        "payload": {
            "description": "The message body exactly as it was received.",
            "anyOf": [_ref("components", "schemas", "CloudEvent"), {}],
        },
    }


def _rpc_message(name: str, schema: str, summary: str) -> Json:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "correlationId": {"location": "$message.header#/correlation_id"},
        "payload": _ref("components", "schemas", schema),
    }


def _bindings_text(service: ServiceTopology) -> str:
    keys = ", ".join(f"`{k}`" for k in service.consumes)
    every = " (every event)" if EVERY_EVENT in service.consumes else ""
    return f"bound to `{EXCHANGE}` with {keys}{every}"


def document(retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS) -> Json:
    """The whole AsyncAPI document as a JSON-ready dict (deterministic: same input, same
    output, so the committed copy can be compared with a fresh one)."""
    channels: Json = {}
    operations: Json = {}
    messages: Json = {}

    for key, cls in EVENTS_BY_ROUTING_KEY.items():
        name = cls.type_name()
        messages[name] = _event_message(cls)
        channels[key] = {
            "address": key,
            "title": f"{EXCHANGE} / {key}",
            "description": f"Events of type `{name}` on the topic exchange `{EXCHANGE}` "
            f"(durable), routing key `{key}`.",
            "messages": {name: _ref("components", "messages", name)},
            "bindings": _exchange_binding(),
        }

    messages["RetryingMessage"] = _wrapper_message(
        "RetryingMessage",
        "A message whose handler failed, waiting for its next attempt.",
        "RetryHeaders",
    )
    messages["ParkedMessage"] = _wrapper_message(
        "ParkedMessage",
        "A message that failed every attempt or could not be parsed at all.",
        "ParkedHeaders",
    )

    for service in SERVICES:
        for key in service.publishes:
            name = EVENTS_BY_ROUTING_KEY[key].type_name()
            operations[f"{service.name}.publish.{name}"] = {
                "action": "send",
                "title": f"{service.name} publishes {name}",
                "summary": "Recorded in the service's outbox in the same transaction as the "
                "state change; relayed persistently with publisher confirms.",
                "channel": _ref("channels", key),
                "messages": [_ref("channels", key, "messages", name)],
                "tags": [{"name": service.name}],
                "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING_VERSION}},
            }

    for service in consumers():
        queue = service.name
        consumed = events_consumed_by(service)
        retry_names = service.retry_queues(retry_delays)
        channels[queue] = {
            "address": queue,
            "title": f"queue {queue}",
            "description": f"Durable quorum queue of `{queue}`, {_bindings_text(service)}. "
            "Messages are acked only after the handler's work is committed; a failing "
            f"handler is retried through {', '.join(f'`{r}`' for r in retry_names)} and "
            f"then parked in `{dlq_name(queue)}`.",
            "messages": {
                cls.type_name(): _ref("components", "messages", cls.type_name()) for cls in consumed
            },
            "bindings": _queue_binding(queue),
            "x-queue-arguments": service.queue_arguments(),
            "x-exchange-bindings": [
                {"exchange": EXCHANGE, "routingKey": k} for k in service.consumes
            ],
        }
        operations[f"{queue}.consume"] = {
            "action": "receive",
            "title": f"{queue} consumes",
            "summary": "Idempotent by event id; ack after commit.",
            "channel": _ref("channels", queue),
            "messages": [_ref("channels", queue, "messages", cls.type_name()) for cls in consumed],
            "tags": [{"name": queue}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        for delay, retry in zip(retry_delays, retry_names, strict=True):
            channels[retry] = {
                "address": retry,
                "title": f"queue {retry}",
                "description": f"Durable quorum queue without consumers: a failed message "
                f"waits {delay:g}s (x-message-ttl) and is dead-lettered back to `{queue}`. "
                "The delays follow the service's RETRY_DELAYS setting.",
                "messages": {"RetryingMessage": _ref("components", "messages", "RetryingMessage")},
                "bindings": _queue_binding(retry),
                "x-queue-arguments": {
                    "x-queue-type": "quorum",
                    "x-message-ttl": max(1, round(delay * 1000)),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            }
        dlq = dlq_name(queue)
        channels[dlq] = {
            "address": dlq,
            "title": f"queue {dlq}",
            "description": f"The parking lot of `{queue}`: messages that failed every attempt "
            "or could not be parsed, with the error in their headers. List, replay and purge "
            "them with `python -m events dlq`.",
            "messages": {"ParkedMessage": _ref("components", "messages", "ParkedMessage")},
            "bindings": _queue_binding(dlq),
            "x-queue-arguments": {"x-queue-type": "quorum"},
        }

    messages["RecommendationRequest"] = _rpc_message(
        "RecommendationRequest",
        "RecommendationRequest",
        "What should this user see next? Sent with reply_to and correlation_id.",
    )
    messages["RecommendationReply"] = _rpc_message(
        "RecommendationReply",
        "RecommendationReply",
        "The answer, sent to the caller's reply_to queue with the same correlation_id.",
    )
    channels[RECOMMENDER_RPC] = {
        "address": RECOMMENDER_RPC,
        "title": f"queue {RECOMMENDER_RPC}",
        "description": "Durable queue the recommender answers request/reply calls on "
        "(requests expire after the caller's timeout).",
        "messages": {
            "RecommendationRequest": _ref("components", "messages", "RecommendationRequest")
        },
        "bindings": _queue_binding(RECOMMENDER_RPC),
    }
    channels[f"{RECOMMENDER_RPC}.reply"] = {
        "address": None,
        "title": "the caller's reply queue",
        "description": "An exclusive queue per caller, named by the request's reply_to.",
        "messages": {"RecommendationReply": _ref("components", "messages", "RecommendationReply")},
    }
    for service in SERVICES:
        for queue in service.serves_rpc:
            operations[f"{service.name}.answer.{queue}"] = {
                "action": "receive",
                "title": f"{service.name} answers {queue}",
                "channel": _ref("channels", queue),
                "messages": [_ref("channels", queue, "messages", "RecommendationRequest")],
                "reply": {
                    "address": {
                        "description": "The request's reply_to property.",
                        "location": "$message.header#/reply_to",
                    },
                    "channel": _ref("channels", f"{queue}.reply"),
                    "messages": [
                        _ref("channels", f"{queue}.reply", "messages", "RecommendationReply")
                    ],
                },
                "tags": [{"name": service.name}],
            }
        for queue in service.calls_rpc:
            operations[f"{service.name}.call.{queue}"] = {
                "action": "send",
                "title": f"{service.name} calls {queue}",
                "summary": "Falls back to popular items when no answer comes within 2 s.",
                "channel": _ref("channels", queue),
                "messages": [_ref("channels", queue, "messages", "RecommendationRequest")],
                "reply": {
                    "channel": _ref("channels", f"{queue}.reply"),
                    "messages": [
                        _ref("channels", f"{queue}.reply", "messages", "RecommendationReply")
                    ],
                },
                "tags": [{"name": service.name}],
            }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "eventshop events",
            "version": CONTRACT_VERSION,
            "description": (
                "Every domain event of eventshop travels as a CloudEvents 1.0 event in "
                f"structured JSON mode (content type `{CONTENT_TYPE}`, persistent, "
                "`message_id` = the event id) on the durable topic exchange "
                f"`{EXCHANGE}`. Each consuming service owns a durable quorum queue named "
                "after itself, retry queues with growing delays and a parking lot "
                "`<service>.dlq`. Generated by `python -m events schemas`; do not edit."
            ),
            "tags": [{"name": s.name} for s in SERVICES],
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "Set by AMQP_URL in every service; the vhost in the URL is used.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": component_schemas(), "messages": messages},
    }
