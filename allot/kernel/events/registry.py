"""Who consumes which events. Contexts register handlers in their `handlers.py` at import time.

A consumer's name is its identity in the inbox: renaming it makes it re-apply old events, so
names are stable strings like "audit.on_user_changed", not function paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.events.outbox import Event

Handler = Callable[[AsyncSession, Event], Awaitable[None]]
Prepare = Callable[[AsyncSession, list[Event]], Awaitable[None]]
Takes = Callable[[Event], bool]


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    event_types: frozenset[str]
    handler: Handler
    # False for effects that are harmless to repeat (live UI refreshes): no inbox row is kept,
    # which saves a write per event, and the handler gets a read-only session. Anything that
    # changes state must stay durable.
    durable: bool = True
    # Runs once before a batch of events is handled one by one, in the same unit of work: it
    # loads what the handler will read for all of them at once (one query instead of one per
    # event); the handler must not depend on it for correctness.
    prepare: Prepare | None = None
    # For a consumer that is a no-op for some events of its types, decided from the event
    # alone (e.g. an assignment its own context recorded when the work was taken in): the
    # others are never handed to it, so they cost it no unit of work and no inbox row (nothing
    # is applied, so there is nothing to apply twice). It must be a pure function of the event.
    takes: Takes | None = None

    def wants(self, event: Event) -> bool:
        return self.takes is None or self.takes(event)


class ConsumerRegistry:
    def __init__(self) -> None:
        self._consumers: dict[str, Consumer] = {}
        # consumers_for's answers: asked for every event written while a dispatcher runs (outbox
        # O2) and for every event dispatched; forgotten whenever a consumer comes or goes.
        self._by_type: dict[str, tuple[Consumer, ...]] = {}

    def subscribe(
        self,
        name: str,
        *event_types: str,
        durable: bool = True,
        prepare: Prepare | None = None,
        takes: Takes | None = None,
    ) -> Callable[[Handler], Handler]:
        if not event_types:
            raise ValueError("A consumer needs at least one event type")

        def decorator(handler: Handler) -> Handler:
            existing = self._consumers.get(name)
            if existing is not None and existing.handler is not handler:
                raise ValueError(f"Consumer name {name!r} is already taken")
            self._consumers[name] = Consumer(
                name, frozenset(event_types), handler, durable, prepare, takes
            )
            self._by_type.clear()
            return handler

        return decorator

    def unsubscribe(self, name: str) -> None:
        self._consumers.pop(name, None)
        self._by_type.clear()

    def consumers_for(self, event_type: str) -> tuple[Consumer, ...]:
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(c for c in self._consumers.values() if event_type in c.event_types)
            self._by_type[event_type] = found
        return found

    def all(self) -> list[Consumer]:
        return list(self._consumers.values())


registry = ConsumerRegistry()
subscribe = registry.subscribe
