"""An `Event` as an AMQP message and back.

The body is the event's fields as JSON (the same document the outbox row holds), so a consumer
sees exactly what the in-process dispatcher would hand it. Properties: `message_id` = event id
(consumers dedupe on it through the inbox), persistent, `application/json`, `type` = event type,
`correlation_id`. Headers: `correlation_id` and `request_id` (so logs of a consumer carry the
request that caused the event) and `allot-partition` (ordered groups route on it).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from aiormq import spec

from allot.kernel.events.broker.topology import PARTITION_HEADER, partition_key, partition_of
from allot.kernel.events.outbox import Event

CONTENT_TYPE = "application/json"
PERSISTENT = 2
# Built once: `json.dumps` with arguments builds an encoder per call.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_body(event: Event) -> bytes:
    document = {
        "id": str(event.id),
        "type": event.type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "payload": event.payload,
        "headers": event.headers,
        "created_at": event.created_at.isoformat() if event.created_at else None,
    }
    return _encode_json(document).encode()


def message_headers(event: Event, partitions: int) -> dict[str, Any]:
    headers: dict[str, Any] = {
        PARTITION_HEADER: str(partition_of(partition_key(event), partitions))
    }
    for name in ("correlation_id", "request_id"):
        value = event.headers.get(name)
        if value:
            headers[name] = str(value)
    return headers


def properties(event: Event, partitions: int) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=str(event.id),
        correlation_id=event.correlation_id,
        message_type=event.type,
        headers=message_headers(event, partitions),
    )


def decode(body: bytes) -> Event:
    """The event of a message body; ValueError/KeyError when it is not one."""
    document = json.loads(body)
    created_at = document.get("created_at")
    return Event(
        id=uuid.UUID(document["id"]),
        type=str(document["type"]),
        aggregate_type=str(document["aggregate_type"]),
        aggregate_id=str(document["aggregate_id"]),
        payload=dict(document["payload"]),
        headers=dict(document.get("headers") or {}),
        created_at=datetime.fromisoformat(created_at) if created_at else None,
    )
