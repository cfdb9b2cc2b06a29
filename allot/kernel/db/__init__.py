"""Database plumbing: base model, portable types, engines, unit of work."""

from allot.kernel.db.base import Base, IdMixin, TimestampMixin, money, relationship
from allot.kernel.db.engine import Database, on_commit
from allot.kernel.db.types import JSONType, UTCDateTime

__all__ = [
    "Base",
    "Database",
    "IdMixin",
    "JSONType",
    "TimestampMixin",
    "UTCDateTime",
    "money",
    "on_commit",
    "relationship",
]
