"""Time-ordered ids (UUIDv7): index-friendly like a sequence, unguessable like a UUID, and
sorting by id sorts by creation time, which keyset pagination relies on."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def parse_id(value: str) -> uuid.UUID:
    """Parse an id from user input; raises ValueError on anything that is not a UUID."""
    return uuid.UUID(value)
