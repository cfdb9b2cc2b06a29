"""Group commit (kernel/db/group_commit.py): G1-G3 with real concurrent callers and a real table."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import context
from allot.kernel.context import Actor
from allot.kernel.db import Database, group_commit
from allot.kernel.db.group_commit import GroupCommit, Row

ANNA = Actor(kind="user", id=uuid.UUID(int=1), label="anna")
BORIS = Actor(kind="user", id=uuid.UUID(int=2), label="boris")


class Refused(Exception):
    pass


@pytest.fixture
async def probe_table(database: Database) -> AsyncIterator[None]:
    async with database.transaction() as session:
        await session.execute(text("DROP TABLE IF EXISTS group_commit_probe"))
        await session.execute(
            text(
                "CREATE TABLE group_commit_probe (key VARCHAR(40) PRIMARY KEY, "
                "actor VARCHAR(40), request_id VARCHAR(40))"
            )
        )
    yield
    async with database.transaction() as session:
        await session.execute(text("DROP TABLE group_commit_probe"))


class Recorder:
    """A batch function writing one row per key, set-based, as a context's would."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def run_batch(self, session: AsyncSession, rows: Sequence[Row[str]]) -> list[object]:
        self.batches.append([row.value for row in rows])
        outcomes: list[object] = []
        values = []
        for row in rows:
            if row.value.startswith("refuse"):
                outcomes.append(Refused(row.value))
                continue
            with row.caller.applied():  # what the row records, it records under its caller
                actor = context.current_actor().label
                values.append(
                    {"key": row.value, "actor": actor, "request_id": context.current_request_id()}
                )
            outcomes.append(f"stored {row.value}")
        if values:
            await session.execute(
                text("INSERT INTO group_commit_probe VALUES (:key, :actor, :request_id)"), values
            )
        return outcomes

    async def run_one(self, session: AsyncSession, value: str) -> str:
        await session.execute(
            text("INSERT INTO group_commit_probe VALUES (:key, :actor, :request_id)"),
            {
                "key": value,
                "actor": context.current_actor().label,
                "request_id": context.current_request_id(),
            },
        )
        return f"alone {value}"


async def stored(database: Database) -> dict[str, tuple[str, str]]:
    async with database.reader() as session:
        rows = await session.execute(text("SELECT key, actor, request_id FROM group_commit_probe"))
        return {row.key: (row.actor, row.request_id) for row in rows}


async def call(group: GroupCommit, value: str, actor: Actor = ANNA) -> object:
    with context.bound(actor=actor, request_id=f"req-{value}"):
        return await group.submit(value)


async def test_concurrent_callers_share_transactions_and_each_gets_its_answer(
    database, probe_table
):
    recorder = Recorder()
    group = GroupCommit("test", database, run_batch=recorder.run_batch, run_one=recorder.run_one)
    keys = [f"k{n}" for n in range(30)]
    answers = await asyncio.gather(*(call(group, key) for key in keys))
    assert answers == [f"stored {key}" for key in keys]
    assert len(recorder.batches) < len(keys)  # callers of one moment were batched
    assert sorted(k for batch in recorder.batches for k in batch) == sorted(keys)
    rows = await stored(database)
    assert rows == {key: ("anna", f"req-{key}") for key in keys}  # G3: each its own request id


async def test_a_refused_row_is_its_callers_error_only(database, probe_table):
    recorder = Recorder()
    group = GroupCommit("test", database, run_batch=recorder.run_batch, run_one=recorder.run_one)
    answers = await asyncio.gather(
        call(group, "a"), call(group, "refuse-b"), call(group, "c"), return_exceptions=True
    )
    assert answers[0] == "stored a"
    assert answers[2] == "stored c"
    assert isinstance(answers[1], Refused)
    assert set(await stored(database)) == {"a", "c"}


async def test_a_failed_batch_leaves_nothing_and_every_row_is_taken_alone(database, probe_table):
    recorder = Recorder()
    group = GroupCommit("test", database, run_batch=recorder.run_batch, run_one=recorder.run_one)
    await call(group, "taken")
    # "taken" again makes the batch's INSERT fail: the other rows must still be stored, alone.
    answers = await asyncio.gather(
        call(group, "x"), call(group, "taken"), call(group, "y"), return_exceptions=True
    )
    assert answers[0] == "alone x"
    assert answers[2] == "alone y"
    assert isinstance(answers[1], IntegrityError)
    assert group.fallbacks == 1
    rows = await stored(database)
    assert set(rows) == {"taken", "x", "y"}
    assert rows["y"] == ("anna", "req-y")  # the single-row path ran under y's own context


async def test_rows_of_different_actors_are_never_in_one_batch(database, probe_table):
    recorder = Recorder()
    group = GroupCommit("test", database, run_batch=recorder.run_batch, run_one=recorder.run_one)
    calls = [call(group, f"{who.label}-{n}", who) for n in range(6) for who in (ANNA, BORIS)]
    await asyncio.gather(*calls)
    for batch in recorder.batches:
        assert len({key.split("-")[0] for key in batch}) == 1, batch
    rows = await stored(database)
    assert all(actor == key.split("-")[0] for key, (actor, _) in rows.items())


async def test_a_caller_that_gives_up_does_not_hold_up_the_others(database, probe_table):
    recorder = Recorder()
    gate = asyncio.Event()

    async def slow_batch(session: AsyncSession, rows: Sequence[Row[str]]) -> list[object]:
        await gate.wait()
        return await recorder.run_batch(session, rows)

    group = GroupCommit("test", database, run_batch=slow_batch, run_one=recorder.run_one)
    first = asyncio.create_task(call(group, "first"))
    await asyncio.sleep(0)  # the first batch is under way, waiting at the gate
    quitter = asyncio.create_task(call(group, "quitter"))
    stayer = asyncio.create_task(call(group, "stayer"))
    await asyncio.sleep(0)
    quitter.cancel()
    gate.set()
    assert await first == "stored first"
    assert await stayer == "stored stayer"
    assert set(await stored(database)) == {"first", "stayer"}


async def test_a_busy_drain_waits_for_the_callers_it_answered(database, probe_table, monkeypatch):
    # Clients that come back a few loop turns after their answer (as they do over a network)
    # join the next batch, instead of leaving it to the one row that arrived meanwhile.
    monkeypatch.setattr(group_commit, "GATHER_SECONDS", 30.0)  # ended by the rows, not the clock
    recorder = Recorder()
    under_way, gate = asyncio.Event(), asyncio.Event()

    async def first_batch_gated(session: AsyncSession, rows: Sequence[Row[str]]) -> list[object]:
        if not recorder.batches:
            under_way.set()
            await gate.wait()
        return await recorder.run_batch(session, rows)

    group = GroupCommit("test", database, run_batch=first_batch_gated, run_one=recorder.run_one)

    async def client(name: str) -> list[object]:
        first = await call(group, f"{name}-1")
        for _ in range(3):  # the answer travels back, the next request comes in
            await asyncio.sleep(0)
        return [first, await call(group, f"{name}-2")]

    clients = [asyncio.create_task(client(name)) for name in "abcd"]
    await under_way.wait()
    late = asyncio.create_task(call(group, "late"))
    while group.waiting() < 1:
        await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*clients, late), timeout=10)
    assert answers[-1] == "stored late"
    assert answers[:-1] == [[f"stored {n}-1", f"stored {n}-2"] for n in "abcd"]
    assert [sorted(batch) for batch in recorder.batches] == [
        ["a-1", "b-1", "c-1", "d-1"],
        ["a-2", "b-2", "c-2", "d-2", "late"],
    ]


async def test_a_lone_caller_or_an_idle_drain_never_waits(database, probe_table, monkeypatch):
    monkeypatch.setattr(group_commit, "GATHER_SECONDS", 30.0)  # a wait would hit the timeouts
    recorder = Recorder()
    group = GroupCommit("test", database, run_batch=recorder.run_batch, run_one=recorder.run_one)
    for n in range(3):
        assert await asyncio.wait_for(call(group, f"k{n}"), timeout=10) == f"stored k{n}"
    # Two answered together, nothing pending after them: the next caller is taken at once.
    pair = asyncio.gather(call(group, "p1"), call(group, "p2"))
    assert await asyncio.wait_for(pair, timeout=10) == ["stored p1", "stored p2"]
    assert await asyncio.wait_for(call(group, "after"), timeout=10) == "stored after"
    assert recorder.batches[-2:] == [["p1", "p2"], ["after"]]
