"""Portable column types and money: what SQLite would silently get wrong must come back right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from allot.kernel.events.models import OutboxEvent
from allot.kernel.money import Money
from allot.kernel.timers import Timer

MOSCOW = timezone(timedelta(hours=3))


async def test_aware_datetimes_come_back_as_the_same_utc_instant(database):
    moscow_morning = datetime(2026, 3, 2, 9, 30, tzinfo=MOSCOW)
    async with database.transaction() as session:
        session.add(Timer(kind="t", due_at=moscow_morning, payload={}))
    async with database.reader() as session:
        stored = (await session.execute(select(Timer.due_at))).scalar_one()
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored == moscow_morning
    assert stored.hour == 6


async def test_naive_datetimes_are_refused(database):
    with pytest.raises(Exception, match="Naive datetime"):
        async with database.transaction() as session:
            session.add(Timer(kind="t", due_at=datetime(2026, 3, 2, 9, 30), payload={}))


async def test_json_columns_round_trip_nested_unicode(database):
    payload = {"name": "Анна", "nested": {"amounts": [1, 2.5, None]}, "flag": True}
    async with database.transaction() as session:
        session.add(
            OutboxEvent(aggregatetype="t", aggregateid="1", type="t.happened", payload=payload)
        )
    async with database.reader() as session:
        stored = (await session.execute(select(OutboxEvent.payload))).scalar_one()
    assert stored == payload


def test_money_parses_decimal_strings_exactly():
    assert Money.of("1500.50") == Money(150050, "RUB")
    assert Money.of("0.10") + Money.of("0.20") == Money.of("0.30")
    assert Money.of(100, "JPY").amount_minor == 100


def test_money_refuses_fractions_smaller_than_a_kopeck():
    with pytest.raises(ValueError, match="decimal places"):
        Money.of("1.005")


def test_money_refuses_floats_and_mixed_currencies():
    with pytest.raises(TypeError):
        Money(1.5, "RUB")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Cannot combine"):
        Money(100, "RUB") + Money(100, "USD")
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(100, "rub")


@given(st.lists(st.integers(min_value=-(10**12), max_value=10**12), max_size=30))
def test_money_sums_equal_integer_sums(amounts):
    total = Money(0)
    for amount in amounts:
        total = total + Money(amount)
    assert total.amount_minor == sum(amounts)
    assert total.major == Decimal(sum(amounts)) / 100


def test_utc_helper_is_aware():
    from allot.kernel.clock import SystemClock

    assert SystemClock().now().tzinfo is UTC
