"""Bulk INSERTs that skip SQLAlchemy's per-row parameter processing.

`session.execute(insert(table), rows)` runs every value of every row through the column type's
bind processor, a Python call per value (a `UTCDateTime` is two, plus the string formatting);
for an import's eight tables that was a quarter of the time. `insert_rows` converts each row
once, with converters built once per table and column set, and hands the rows to the driver in
the session's own connection and transaction: SQLite's executemany (through `exec_driver_sql`,
so SQLAlchemy's events and error translation apply), PostgreSQL's COPY (see `_copy`). Either
way a row the database refuses raises SQLAlchemy's `IntegrityError` (or another `DBAPIError`)
and leaves the transaction to the caller, as `session.execute` would.

What is stored is what `session.execute(insert(table), rows)` stores, value for value
(tests/kernel/test_bulk_insert.py reads rows back through both and compares them):
- SQLite: a `Uuid` as its 32 hex digits, a `UTCDateTime` as the naive UTC text of SQLite's
  DATETIME, JSON as the dialect's serializer writes it (`json.dumps` unless the engine set one);
- PostgreSQL (asyncpg): uuids and aware datetimes as they are, JSON as text the server parses;
- any other type through SQLAlchemy's own bind processor for it.
A column the rows leave out gets its Python-side default (`default=new_id`, `default=dict`)
as SQLAlchemy would give it, or NULL / the server default when it has none.

Two repeats within a call cost one conversion: JSON documents by identity (the outbox rows of a
batch share one `headers` dict) and datetimes by value (a batch shares its `now`).

Deferred inserts (`db.deferred`) are untouched: rows written here go in at once, in the caller's
transaction, like any other statement; the deferred ones still go in at commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import JSON, Column, Connection, Dialect, Table, Uuid, insert
from sqlalchemy.dialects.sqlite.base import DATETIME as SQLITE_DATETIME
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from allot.kernel.db.types import UTCDateTime

Row = Mapping[str, Any]
Convert = Callable[[Any], Any]
# Builds a row converter with fresh memo tables, for one call.
ConverterFactory = Callable[[], Callable[[Row], tuple[Any, ...]]]

_SQLITE_DATETIME_FORMAT = SQLITE_DATETIME._storage_format
# PostgreSQL takes fewer rows with one pipelined executemany (COPY asks for the columns' types
# first: one more round trip); a unit of work's few deferred rows stay one INSERT.
COPY_MIN_ROWS = 100


class NotBulkInsertable(ValueError):
    """The rows name a column the table lacks, or leave out one whose default only SQLAlchemy
    can compute (a SQL expression, a function of the execution context)."""


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Row]) -> None:
    """INSERT `rows` (dicts keyed by column name, all with the keys of the first) into `table`
    in the session's transaction: one executemany (SQLite) or COPY (PostgreSQL)."""
    if rows:
        await session.run_sync(write_rows, table, rows)


def write_rows(session: Session, table: Table, rows: Sequence[Row]) -> None:
    """`insert_rows` for synchronous code: a session's event hooks, `run_sync`."""
    if not rows:
        return
    connection = session.connection()
    plan = _plan(connection.dialect, table, tuple(rows[0]))
    convert = plan.converter()
    values = [convert(row) for row in rows]
    copy = connection.dialect.name == "postgresql" and connection.dialect.driver == "asyncpg"
    if copy and len(values) >= COPY_MIN_ROWS:
        _copy(connection, table, plan, values)
    else:
        connection.exec_driver_sql(plan.sql, values)


def _copy(connection: Connection, table: Table, plan: _Plan, values: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: COPY instead of INSERTs, a third of the server's work per row. COPY goes to
    asyncpg itself, so two things SQLAlchemy would do are done here: the transaction is begun
    first if it is not yet (SQLAlchemy's adapter begins it lazily, at its first statement, and a
    COPY outside it would commit on its own), and the driver's errors become SQLAlchemy's."""
    driver: Any = connection.connection.driver_connection
    if not driver.is_in_transaction():
        connection.exec_driver_sql("SELECT 1")
    statement = f"COPY {table.name} ({', '.join(plan.columns)}) FROM STDIN"
    # The engine's listeners (statement counts, logs) see it as any other statement.
    events = connection.dispatch
    events.before_cursor_execute(connection, None, statement, values, None, True)
    try:
        await_(
            driver.copy_records_to_table(
                table.name, records=values, columns=plan.columns, schema_name=table.schema
            )
        )
    except asyncpg.PostgresError as error:
        if isinstance(error, asyncpg.IntegrityConstraintViolationError):
            raise IntegrityError(statement, None, error) from error
        raise DBAPIError(statement, None, error) from error
    events.after_cursor_execute(connection, None, statement, values, None, True)


class _Plan:
    """The statement and the row converter for one (dialect, table, keys)."""

    __slots__ = ("columns", "converter", "sql")

    def __init__(self, sql: str, columns: list[str], converter: ConverterFactory) -> None:
        self.sql = sql
        self.columns = columns  # names, in the order of the converted values
        self.converter = converter


_plans: dict[tuple[Any, ...], _Plan] = {}


def _plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Plan:
    # What the plan depends on: the dialect's kind and JSON serializer, the table, the keys.
    cache_key = (type(dialect), getattr(dialect, "_json_serializer", None), table, keys)
    plan = _plans.get(cache_key)
    if plan is None:
        plan = _plans[cache_key] = _build_plan(dialect, table, keys)
    return plan


def _build_plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Plan:
    unknown = [key for key in keys if key not in table.c]
    if unknown:
        raise NotBulkInsertable(f"{table.name} has no column {', '.join(unknown)}")
    # SQLAlchemy's own statement for these keys: the columns left out that have a Python-side
    # default are parameters too (SQLAlchemy computes their values per row; so do we).
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    order = list(compiled.positiontup or ())
    if len(set(order)) != len(order) or not set(keys) <= set(order):
        raise NotBulkInsertable(f"{table.name}: unexpected parameters {order}")
    defaults: list[Column[Any]] = [table.c[name] for name in order if name not in keys]
    for column in defaults:
        default: Any = column.default
        computable = default is not None and (default.is_scalar or default.is_callable)
        if not computable or default.arg is getattr(default, "_fn", None):  # SQL, or a context
            raise NotBulkInsertable(f"{table.name}.{column.key}: pass it (SQLAlchemy's default)")
    columns: list[Column[Any]] = [table.c[name] for name in order]
    makers = [_converter_maker(dialect, column) for column in columns]
    defaulted = {column.key: _default_value(column) for column in defaults}
    return _Plan(compiled.string, [c.name for c in columns], _compile(order, makers, defaulted))


def _compile(
    order: list[str], makers: list[Maker], defaulted: dict[str, Callable[[], Any]]
) -> ConverterFactory:
    """The row converter as the source of one function, compiled once per plan:
    `lambda row: (c0(row["id"]), row["source"], d2(), ...)`. The generic loop it replaces
    (fetch, insert the defaults, apply each step) cost 25-45% more per row (a lead's row 2.9 vs
    2.0 µs, an outbox row 2.5 vs 2.0), and an import converts ~10 rows per lead. Only column
    keys go into the source, as string literals (repr); the converters and default producers
    are arguments of `factory`."""
    steps = [make() for make in makers]
    parts = []
    for index, key in enumerate(order):
        value = f"d{index}()" if key in defaulted else f"row[{key!r}]"
        if steps[index] is _hex:  # inline: one call less per id (several per row)
            parts.append(f"(None if (v{index} := {value}) is None else '%032x' % v{index}.int)")
        elif steps[index] is not None:
            parts.append(f"c{index}({value})")
        else:  # the value as it is
            parts.append(value)
    source = f"def factory({', '.join(f'c{i}' for i in range(len(order)))}, defaults):\n"
    for index, key in enumerate(order):
        if key in defaulted:
            source += f"    d{index} = defaults[{key!r}]\n"
    source += f"    return lambda row: ({', '.join(parts)},)\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "<bulk_insert converter>", "exec"), namespace)  # noqa: S102
    factory = namespace["factory"]

    def converter() -> Callable[[Row], tuple[Any, ...]]:
        return cast(Callable[[Row], tuple[Any, ...]], factory(*[m() for m in makers], defaulted))

    return converter


def _default_value(column: Column[Any]) -> Callable[[], Any]:
    default: Any = column.default
    if default.is_scalar:
        constant = default.arg
        return lambda: constant
    function = default.arg  # a zero-argument callable, wrapped by SQLAlchemy to take a context
    return lambda: function(None)


# A maker returns a fresh converter (with its own memo) per call, or None: the value as it is.
Maker = Callable[[], Convert | None]


def _converter_maker(dialect: Dialect, column: Column[Any]) -> Maker:
    column_type = column.type
    sqlite = dialect.name == "sqlite"
    if isinstance(column_type, UTCDateTime):
        stored = column_type.impl_instance.dialect_impl(dialect)
        if sqlite and getattr(stored, "_storage_format", None) == _SQLITE_DATETIME_FORMAT:
            return _sqlite_utc_datetimes
        if dialect.name == "postgresql" and stored.bind_processor(dialect) is None:
            return lambda: _aware_utc
    elif isinstance(column_type, Uuid) and column_type.as_uuid:
        if column_type.bind_processor(dialect) is None:
            return lambda: None  # the driver takes uuid.UUID (asyncpg)
        if not (dialect.supports_native_uuid and column_type.native_uuid):
            return lambda: _hex
    impl: Any = column_type.dialect_impl(dialect)
    process = impl.bind_processor(dialect)
    if isinstance(impl, JSON) and process is not None and _plain_json(impl, dialect):
        serializer = getattr(dialect, "_json_serializer", None) or json_dumps
        return _json_documents(serializer, none_as_null=impl.none_as_null)
    return lambda: process


def _json_dumps_encoder() -> Callable[[Any], str]:
    """`json.dumps` with its default arguments, minus building a C encoder per call (what
    `json.dumps` does): the same text, in a third less time."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    encoder = json.JSONEncoder()
    encode = make(
        {}, encoder.default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
        False, False, True,
    )  # fmt: skip

    def dumps(value: Any) -> str:
        if isinstance(value, str):  # json.dumps encodes a bare string itself, without the encoder
            return json.dumps(value)
        return "".join(encode(value, 0))

    return dumps


# json.dumps's text, faster; also for whoever must see a document as its column will hold it.
json_dumps = _json_dumps_encoder()


def _plain_json(impl: JSON, dialect: Dialect) -> bool:
    """The JSON type serializes and stores the text as it is (no string processing after)."""
    return impl._str_impl.bind_processor(dialect) is None


def _hex(value: Any) -> Any:
    return None if value is None else value.hex  # UUID.hex is '%032x' % value.int


def _aware_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:  # as UTCDateTime refuses it
        raise ValueError("Naive datetime given to a UTC column; attach a time zone")
    return value.astimezone(UTC)


def _sqlite_utc_datetimes() -> Convert:
    memo: dict[datetime, str] = {}

    def convert(value: datetime | None) -> str | None:
        if value is None:
            return None
        text = memo.get(value)
        if text is None:
            # SQLite's DATETIME text ("2026-01-31 09:30:00.000000") of the naive UTC time.
            text = memo[value] = _utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")
        return text

    return convert


def _json_documents(serializer: Callable[[Any], str], *, none_as_null: bool) -> Maker:
    def make() -> Convert:
        # By identity: the objects are alive in the caller's rows for the whole call.
        memo: dict[int, str] = {}

        def convert(value: Any) -> str | None:
            if value is None and none_as_null:
                return None
            key = id(value)
            text = memo.get(key)
            if text is None:
                text = memo[key] = serializer(value)
            return text

        return convert

    return make
