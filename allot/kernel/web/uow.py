"""The request unit of work: one session per request, committed BEFORE the response is sent.

FastAPI runs the exit code of `yield` dependencies around the response in ways that have changed
between versions; a client must never see 2xx for a transaction that then fails to commit. So the
session is opened lazily by a plain dependency and committed by `UnitOfWorkRoute`, which wraps
the endpoint: the endpoint returns, the response is built, the transaction commits, and only then
does Starlette send a byte. An exception from the endpoint rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.db.engine import (
    MAX_TRANSACTION_ATTEMPTS,
    Database,
    backoff_before_retry,
    is_retryable,
    yield_to_waiters,
)


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def write_session(request: Request) -> AsyncSession:
    """The request's read-write session (the SQLite writer, or a PostgreSQL connection)."""
    session: AsyncSession | None = getattr(request.state, "write_session", None)
    if session is None:
        database = get_database(request)
        await database.take_writer_turn()  # released by finish_request
        session = database.write_session()
        request.state.write_session = session
    return session


async def read_session(request: Request) -> AsyncSession:
    """A read-only session; in a request that also writes, the write session (read your writes)."""
    existing: AsyncSession | None = getattr(request.state, "write_session", None)
    if existing is not None:
        return existing
    session: AsyncSession | None = getattr(request.state, "read_session", None)
    if session is None:
        session = get_database(request).read_session()
        request.state.read_session = session
    return session


WriteSession = Annotated[AsyncSession, Depends(write_session)]
ReadSession = Annotated[AsyncSession, Depends(read_session)]

# Hooks run on the write session after the endpoint returned and before commit (idempotency).
BeforeCommit = Callable[[AsyncSession, Response], Coroutine[Any, Any, None]]


def before_commit(request: Request, hook: BeforeCommit) -> None:
    hooks: list[BeforeCommit] = getattr(request.state, "before_commit", [])
    hooks.append(hook)
    request.state.before_commit = hooks


async def finish_request(request: Request, response: Response | None) -> None:
    """Commit (response given) or roll back (None) and close the request's sessions."""
    write: AsyncSession | None = getattr(request.state, "write_session", None)
    read: AsyncSession | None = getattr(request.state, "read_session", None)
    try:
        if write is not None:
            if response is not None:
                for hook in getattr(request.state, "before_commit", []):
                    await hook(write, response)
                await write.commit()
            else:
                await write.rollback()
    finally:
        request.state.write_session = None
        request.state.read_session = None
        try:
            if write is not None:
                await write.close()
            if read is not None:
                await read.close()
        finally:
            if write is not None:
                get_database(request).end_writer_turn()
                await yield_to_waiters()


class UnitOfWorkRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint_handler = super().get_route_handler()

        async def handler(request: Request) -> Response:
            # A deadlock or serialization failure wrote nothing: run the endpoint again from
            # scratch (its body is cached by Starlette), up to MAX_TRANSACTION_ATTEMPTS times.
            for attempt in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
                try:
                    response = await endpoint_handler(request)
                    await finish_request(request, response)
                    return response
                except BaseException as exc:
                    await finish_request(request, None)
                    if not is_retryable(exc) or attempt == MAX_TRANSACTION_ATTEMPTS:
                        raise
                    request.state.before_commit = []
                    await backoff_before_retry(attempt)
            raise AssertionError("unreachable")

        return handler
