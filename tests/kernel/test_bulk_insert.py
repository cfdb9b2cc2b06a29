"""`insert_rows` stores exactly what `session.execute(insert(table), rows)` stores, on both
backends, and fails the way SQLAlchemy does (the CSV import splits batches on IntegrityError)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from allot.kernel.clock import utcnow
from allot.kernel.db.bulk_insert import COPY_MIN_ROWS, insert_rows
from allot.kernel.db.engine import Database
from allot.kernel.db.types import JSONType, UTCDateTime
from allot.kernel.ids import new_id

MOSCOW = timezone(timedelta(hours=3))

# A table of its own (not part of the app's metadata), with every column type the app uses.
metadata = MetaData()
SAMPLES = Table(
    "test_bulk_insert_samples",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("label", String(50), nullable=False),
    Column("at", UTCDateTime()),
    Column("day", Date()),
    Column("flag", Boolean()),
    Column("ratio", Float()),
    Column("big", BigInteger()),
    Column("note", Text()),
    Column("doc", JSONType),
    Column("ref", Uuid()),
    Column("status", String(16), default="pending"),  # a scalar default
    Column("stamp", UTCDateTime(), default=utcnow),  # a callable one
    Column("extra", JSONType, default=dict),
)


@pytest.fixture
async def samples(database: Database) -> AsyncIterator[Database]:
    async with database.write_engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    async with database.write_engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)


def variety() -> list[dict[str, Any]]:
    shared = {"shared": "один документ в двух строках"}
    full = {
        "at": datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=MOSCOW),
        "day": date(2026, 3, 2),
        "flag": True,
        "ratio": 0.1,
        "big": 10**15,
        "note": 'Пётр "Петя" \' ; \\ \u2028',
        "doc": {"name": "Анна", "nested": {"amounts": [1, 2.5, None]}, "flag": False},
        "ref": uuid.UUID("01234567-89ab-7def-8123-456789abcdef"),
    }
    empty = dict.fromkeys(full)
    return [
        {"label": "full", **full},
        {"label": "empty", **empty},
        {"label": "whole second", **full, "at": datetime(2026, 1, 1, tzinfo=UTC), "flag": False},
        {"label": "old", **full, "at": datetime(999, 12, 31, 23, 59, tzinfo=UTC), "doc": []},
        {"label": "shared 1", **full, "doc": shared},
        {"label": "shared 2", **full, "doc": shared},
        {"label": "scalar json", **full, "doc": "text"},
    ]


def with_ids(rows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [{"id": new_id(), **row, "label": f"{prefix} {row['label']}"} for row in rows]


async def stored(database: Database, prefix: str) -> dict[str, tuple[Any, ...]]:
    """label -> the row as the database holds it (driver values, no SQLAlchemy types), id out."""
    columns = ", ".join(c.name for c in SAMPLES.c if c.name not in ("id", "label"))
    async with database.write_engine.connect() as conn:
        result = await conn.exec_driver_sql(f"SELECT label, {columns} FROM {SAMPLES.name}")
        return {
            row[0].removeprefix(prefix + " "): tuple(row[1:])
            for row in result
            if row[0].startswith(prefix + " ")
        }


async def loaded(database: Database, prefix: str) -> dict[str, dict[str, Any]]:
    """label -> the row as SQLAlchemy reads it back (with the column types), id out."""
    async with database.reader() as session:
        rows = (await session.execute(select(SAMPLES))).mappings()
        return {
            row["label"].removeprefix(prefix + " "): {
                k: v for k, v in row.items() if k not in ("id", "label")
            }
            for row in rows
            if row["label"].startswith(prefix + " ")
        }


# Few rows go in as one executemany, many as COPY on PostgreSQL: both ways are checked.
SIZES = pytest.mark.parametrize("copies", [1, COPY_MIN_ROWS // 5], ids=["few", "many"])


def repeated(rows: list[dict[str, Any]], copies: int) -> list[dict[str, Any]]:
    return [{**row, "label": f"{row['label']} {n}"} for n in range(copies) for row in rows]


@SIZES
async def test_rows_are_stored_as_sqlalchemy_stores_them(
    samples: Database, clock: Any, copies: int
) -> None:
    async with samples.transaction() as session:
        await session.execute(insert(SAMPLES), with_ids(repeated(variety(), copies), "orm"))
        await insert_rows(session, SAMPLES, with_ids(repeated(variety(), copies), "bulk"))

    by_orm, by_bulk = await stored(samples, "orm"), await stored(samples, "bulk")
    assert len(by_bulk) == len(variety()) * copies
    assert by_bulk == by_orm
    assert await loaded(samples, "bulk") == await loaded(samples, "orm")
    full = (await loaded(samples, "bulk"))["full 0"]
    assert full["at"] == datetime(2026, 3, 2, 6, 30, 15, 123456, tzinfo=UTC)
    assert (full["status"], full["extra"], full["stamp"]) == ("pending", {}, utcnow())
    if samples.is_sqlite:  # the text SQLAlchemy writes, as it writes it
        raw = by_bulk["full 0"]
        assert raw[0] == "2026-03-02 06:30:15.123456"
        assert raw[6] == '{"name": "\\u0410\\u043d\\u043d\\u0430", "nested": ' \
            '{"amounts": [1, 2.5, null]}, "flag": false}'  # fmt: skip
        assert raw[7] == "0123456789ab7def8123456789abcdef"


@SIZES
async def test_the_rows_are_the_callers_transactions(samples: Database, copies: int) -> None:
    rows = [{"id": new_id(), "label": f"kept out {n}"} for n in range(copies * 5)]
    with pytest.raises(RuntimeError):
        async with samples.transaction() as session:  # the insert is its first statement
            await insert_rows(session, SAMPLES, rows)
            raise RuntimeError("the unit of work fails after the insert")
    async with samples.reader() as session:
        assert await session.scalar(select(func.count()).select_from(SAMPLES)) == 0


@SIZES
async def test_a_refused_row_raises_sqlalchemys_integrity_error(
    samples: Database, copies: int
) -> None:
    taken = new_id()
    async with samples.transaction() as session:
        await insert_rows(session, SAMPLES, [{"id": taken, "label": "first"}])
    fine = [{"id": new_id(), "label": f"fine {n}"} for n in range(copies * 5)]
    with pytest.raises(IntegrityError):
        async with samples.transaction() as session:
            await insert_rows(session, SAMPLES, [*fine, {"id": taken, "label": "again"}])
    async with samples.reader() as session:
        labels = (await session.execute(select(SAMPLES.c.label))).scalars().all()
    assert labels == ["first"]  # the whole statement (and transaction) went


async def test_naive_datetimes_and_unknown_columns_are_refused(samples: Database) -> None:
    async with samples.transaction() as session:
        with pytest.raises(ValueError, match="Naive datetime"):
            await insert_rows(
                session, SAMPLES, [{"id": new_id(), "label": "x", "at": datetime(2026, 3, 2)}]
            )
        with pytest.raises(ValueError, match="no column colour"):
            await insert_rows(session, SAMPLES, [{"id": new_id(), "label": "x", "colour": 1}])
