"""Append-only rows written once per transaction instead of once per call.

Outbox events, audit entries, activity and timeline rows are never updated by the transaction
that writes them, and a lead's intake writes several of each. `defer_insert` keeps such rows
in the session and writes them with one executemany INSERT per table just before the commit,
so a unit of work pays one round trip per table instead of one per row. The rows go in through
`bulk_insert.write_rows` (no per-value SQLAlchemy processing; the same stored values).

Invariants:
- D1 a deferred row is written in the same transaction as the business change that deferred it
  (the hook runs in `before_commit`, inside that transaction), or not at all (a rollback drops
  the buffer);
- D2 read-your-writes: a SELECT, UPDATE or DELETE in the same session that touches a table
  with deferred rows writes them first, so nothing in the transaction sees (or misses, when
  moving rows from one card to another) the table without its own rows.

Savepoints: nothing uses them yet. Whoever adds `begin_nested()` must call `write_deferred`
before it and drop the buffer when the savepoint rolls back, or rows deferred inside a
rolled-back savepoint would still be written at commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import Delete, Join, Select, Update

from allot.kernel.db.bulk_insert import NotBulkInsertable, write_rows
from allot.kernel.db.engine import AllotSession, sync_session_of

_BUFFER_KEY = "allot.deferred_inserts"


def defer_insert(session: AsyncSession | Session, table: Table, row: dict[str, Any]) -> None:
    """Queue `row` for `table`; it is INSERTed before this transaction commits (D1)."""
    defer_insert_many(session, table, [row])


def defer_insert_many(
    session: AsyncSession | Session, table: Table, rows: list[dict[str, Any]]
) -> None:
    """`defer_insert` for many rows at once (bulk writers)."""
    info = sync_session_of(session).info
    buffer: dict[Table, list[dict[str, Any]]] = info.setdefault(_BUFFER_KEY, {})
    buffer.setdefault(table, []).extend(rows)


def write_deferred(session: Session, only: set[str] | None = None) -> None:
    """Write the queued rows now (all tables, or those named in `only`)."""
    buffer: dict[Table, list[dict[str, Any]]] | None = session.info.get(_BUFFER_KEY)
    if not buffer:
        return
    for table in list(buffer):
        if only is not None and table.name not in only:
            continue
        rows = buffer.pop(table)
        # executemany wants one shape; rows of one table come from one writer, but a caller
        # may omit a defaulted column, so group by key set rather than trusting that.
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_shape.setdefault(tuple(row), []).append(row)
        for shaped in by_shape.values():
            try:
                write_rows(session, table, shaped)
            except NotBulkInsertable:
                session.execute(insert(table), shaped)


@event.listens_for(AllotSession, "before_commit")
def _write_before_commit(session: Session) -> None:
    write_deferred(session)


@event.listens_for(AllotSession, "after_rollback")
def _drop_on_rollback(session: Session) -> None:
    session.info.pop(_BUFFER_KEY, None)


def _table_names(from_clause: Any, into: set[str]) -> None:
    if isinstance(from_clause, Join):
        _table_names(from_clause.left, into)
        _table_names(from_clause.right, into)
    else:
        name = getattr(from_clause, "name", None)
        if name:
            into.add(name)


@event.listens_for(AllotSession, "do_orm_execute")
def _write_before_touching(state: ORMExecuteState) -> None:
    buffer = state.session.info.get(_BUFFER_KEY)
    if not buffer:
        return
    statement = state.statement
    touched: set[str] = set()
    if isinstance(statement, Select):
        # The explicit FROMs and those of the selected columns/entities; not get_final_froms(),
        # which costs more than the query it inspects. A table reached only through a WHERE
        # clause is missed: read such a table with select_from() when it can hold deferred rows.
        for from_clause in (*statement._from_obj, *statement.columns_clause_froms):
            _table_names(from_clause, touched)
    elif isinstance(statement, Update | Delete):
        _table_names(statement.table, touched)
    else:
        return
    pending = {table.name for table in buffer} & touched
    if pending:
        write_deferred(state.session, only=pending)  # D2
