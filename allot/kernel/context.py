"""Per-request (or per-job) context carried implicitly: request id, correlation id and the actor.

Logs, audit rows and outbox events read these, so callers never thread them through by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a user (id + label for the audit trail) or the system itself."""

    kind: str  # "user" | "token" | "system"
    id: uuid.UUID | None
    label: str

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(kind="system", id=None, label=label)


request_id_var: ContextVar[str | None] = ContextVar("allot_request_id", default=None)
correlation_id_var: ContextVar[str | None] = ContextVar("allot_correlation_id", default=None)
actor_var: ContextVar[Actor | None] = ContextVar("allot_actor", default=None)


def current_actor() -> Actor:
    return actor_var.get() or Actor.system()


def current_request_id() -> str | None:
    return request_id_var.get()


def current_correlation_id() -> str | None:
    return correlation_id_var.get() or request_id_var.get()


@contextmanager
def bound(
    *,
    request_id: str | None = None,
    correlation_id: str | None = None,
    actor: Actor | None = None,
) -> Iterator[None]:
    """Bind context values for the duration of a block (a job, an event handler, a CLI command)."""
    tokens: list[tuple[ContextVar[Any], Token[Any]]] = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if correlation_id is not None:
        tokens.append((correlation_id_var, correlation_id_var.set(correlation_id)))
    if actor is not None:
        tokens.append((actor_var, actor_var.set(actor)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


@dataclass(frozen=True, slots=True)
class ContextSnapshot:
    """The context of one caller, captured to be applied again elsewhere: work handed from a
    request to a shared writer (group commit) keeps its own actor, request and correlation id."""

    request_id: str | None
    correlation_id: str | None
    actor: Actor | None

    @contextmanager
    def applied(self) -> Iterator[None]:
        tokens = (
            request_id_var.set(self.request_id),
            correlation_id_var.set(self.correlation_id),
            actor_var.set(self.actor),
        )
        try:
            yield
        finally:
            actor_var.reset(tokens[2])
            correlation_id_var.reset(tokens[1])
            request_id_var.reset(tokens[0])


def snapshot() -> ContextSnapshot:
    return ContextSnapshot(request_id_var.get(), correlation_id_var.get(), actor_var.get())
