"""Events: transactional outbox, consumer registry, in-process dispatcher, inbox dedup."""

from allot.kernel.events.dispatcher import Dispatcher, mark_applied, pending_count
from allot.kernel.events.models import InboxEntry, OutboxEvent
from allot.kernel.events.outbox import Event, publish
from allot.kernel.events.registry import ConsumerRegistry, registry, subscribe

__all__ = [
    "ConsumerRegistry",
    "Dispatcher",
    "Event",
    "InboxEntry",
    "OutboxEvent",
    "mark_applied",
    "pending_count",
    "publish",
    "registry",
    "subscribe",
]
