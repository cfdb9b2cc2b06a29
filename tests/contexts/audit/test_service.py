"""Recording changes into the trail and pseudonymising a person out of it."""

from __future__ import annotations

import enum
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from allot.contexts import audit
from allot.contexts.audit import AuditEntryIn
from allot.contexts.audit.models import AuditEntry
from allot.contexts.audit.service import changed_fields
from allot.kernel.context import bound
from allot.kernel.money import Money
from tests.conftest import count_queries

from .factories import all_entries, entry_of, user_actor

PSEUDONYM = re.compile(r"^pseud:[0-9a-f]{16}$")


class Stage(enum.Enum):
    NEW = "new"


async def test_record_writes_who_when_what_and_the_request(database, clock):
    actor = user_actor("admin@example.ru")
    object_id = uuid.uuid4()
    with bound(request_id="req-42", correlation_id="corr-7", actor=actor):
        async with database.transaction() as session:
            entry_id = await audit.record(
                session,
                action="identity.user.updated",
                object_type="identity.user",
                object_id=object_id,
                before={"email": "old@example.ru", "role": "operator"},
                after={"email": "new@example.ru", "role": "operator"},
                personal_fields=("email",),
                summary="E-mail changed",
            )

    entry = await entry_of(database, entry_id)
    assert entry.occurred_at == clock.now()
    assert (entry.actor_kind, entry.actor_id, entry.actor_label) == (
        "user", actor.id, "admin@example.ru",
    )  # fmt: skip
    assert entry.action == "identity.user.updated"
    assert (entry.object_type, entry.object_id) == ("identity.user", str(object_id))
    assert entry.before == {"email": "old@example.ru", "role": "operator"}
    assert entry.after == {"email": "new@example.ru", "role": "operator"}
    assert entry.changed_fields == ["email"]
    assert entry.personal_fields == ["email"]
    assert (entry.request_id, entry.correlation_id) == ("req-42", "corr-7")
    assert entry.summary == "E-mail changed"
    assert entry.pseudonymised_at is None


async def test_outside_a_request_the_system_is_the_actor(database):
    async with database.transaction() as session:
        entry_id = await audit.record(
            session, action="leads.import.finished", object_type="leads.import", object_id="b-1"
        )
    entry = await entry_of(database, entry_id)
    assert (entry.actor_kind, entry.actor_id, entry.actor_label) == ("system", None, "system")
    assert entry.request_id is None
    assert entry.before is None
    assert entry.after is None
    assert entry.changed_fields == []


async def test_a_rolled_back_change_leaves_no_entry(database):
    with pytest.raises(RuntimeError, match="change failed"):
        async with database.transaction() as session:
            await audit.record(session, action="x.changed", object_type="x", object_id="1")
            await session.flush()
            raise RuntimeError("change failed")
    assert await all_entries(database) == []


async def test_entries_of_a_unit_of_work_cost_one_insert_at_commit(database):
    with count_queries(database) as queries:
        async with database.transaction() as session:
            for n in range(3):
                await audit.record(
                    session, action="x.created", object_type="x", object_id=str(n), after={"a": n}
                )
            assert queries.statements == []  # deferred to the commit
    inserts = [s for s in queries.statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert len(await all_entries(database)) == 3


async def test_a_read_in_the_same_transaction_sees_deferred_entries(database):
    async with database.transaction() as session:
        await audit.record(session, action="x.created", object_type="x", object_id="1")
        found = await session.scalar(select(func.count()).select_from(AuditEntry))
    assert found == 1


async def test_values_are_stored_json_safe(database):
    moment = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    ref = uuid.UUID("0190a8e4-5b2c-7d3e-8f4a-1b2c3d4e5f60")
    async with database.transaction() as session:
        entry_id = await audit.record(
            session,
            action="leads.lead.created",
            object_type="leads.lead",
            object_id=ref,
            after={
                "owner_id": ref, "due_at": moment, "rate": Decimal("12.50"), "stage": Stage.NEW,
                "budget": Money.of("1500.50"), "tags": ("a", "b"), "extra": {"n": ref},
            },
        )  # fmt: skip
    entry = await entry_of(database, entry_id)
    assert entry.after == {
        "owner_id": str(ref), "due_at": "2026-01-05T09:30:00+00:00", "rate": "12.50",
        "stage": "new", "budget": "1500.50 RUB", "tags": ["a", "b"], "extra": {"n": str(ref)},
    }  # fmt: skip


async def test_credentials_are_redacted_but_their_change_is_recorded(database):
    async with database.transaction() as session:
        entry_id = await audit.record(
            session,
            action="identity.user.password_changed",
            object_type="identity.user",
            object_id="u-1",
            before={"password_hash": "$argon2id$old"},
            after={"password_hash": "$argon2id$new"},
        )
    entry = await entry_of(database, entry_id)
    assert entry.changed_fields == ["password_hash"]
    assert entry.before == {"password_hash": "[redacted]"}
    assert entry.after == {"password_hash": "[redacted]"}


async def test_well_known_personal_fields_count_even_when_not_declared(database):
    async with database.transaction() as session:
        entry_id = await audit.record(
            session,
            action="customers.customer.created",
            object_type="customers.customer",
            object_id="c-1",
            after={"full_name": "Иван Петров", "contact_phone": "+79123456789", "segment": "b2b"},
            personal_fields=("passport_no",),
        )
    entry = await entry_of(database, entry_id)
    assert entry.personal_fields == ["passport_no", "full_name", "contact_phone"]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, {"a": 1, "b": None}, ["a", "b"]),  # creation: every field is new
        ({"a": 1}, None, ["a"]),  # removal
        ({"a": 1, "b": "x"}, {"a": 1, "b": "y"}, ["b"]),
        ({"a": 1, "gone": 2}, {"a": 1, "new": 3}, ["gone", "new"]),
        ({"flag": 1}, {"flag": True}, ["flag"]),  # 1 == True in Python, not in the trail
        ({"m": {"x": 1, "y": 2}}, {"m": {"y": 2, "x": 1}}, []),  # key order is no change
        ({"a": [1, 2]}, {"a": [2, 1]}, ["a"]),  # list order is
    ],
)
def test_changed_fields(before, after, expected):
    assert changed_fields(before, after) == expected


async def test_record_many_writes_every_entry_in_one_statement(database, clock):
    entries = [
        AuditEntryIn(action="leads.lead.imported", object_type="leads.lead", object_id=f"l-{n}",
                     after={"source": "csv", "row": n})
        for n in range(3)
    ]  # fmt: skip
    with bound(request_id="req-import", actor=user_actor("ops@example.ru")):
        async with database.transaction() as session:
            with count_queries(database) as queries:
                written = await audit.record_many(session, entries)
            assert await audit.record_many(session, []) == 0

    assert written == 3
    assert len(queries.statements) == 1
    stored = await all_entries(database)
    assert sorted(e.object_id for e in stored) == ["l-0", "l-1", "l-2"]
    assert {(e.actor_label, e.request_id, e.occurred_at) for e in stored} == {
        ("ops@example.ru", "req-import", clock.now())
    }
    assert all(e.changed_fields == ["source", "row"] for e in stored)


async def test_entries_cannot_be_deleted_or_rewritten_in_the_database(database):
    async with database.transaction() as session:
        entry_id = await audit.record(session, action="x.created", object_type="x", object_id="1")

    for statement in (
        delete(AuditEntry).where(AuditEntry.id == entry_id),
        update(AuditEntry).where(AuditEntry.id == entry_id).values(action="x.forged"),
        update(AuditEntry).where(AuditEntry.id == entry_id).values(object_id="2"),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with database.transaction() as session:
                await session.execute(statement)

    entry = await entry_of(database, entry_id)
    assert (entry.action, entry.object_id) == ("x.created", "1")


async def test_the_guard_is_part_of_the_schema(database):
    async with database.reader() as session:
        if database.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        names = set((await session.execute(text(query))).scalars())
    assert {"audit_entries_no_delete", "audit_entries_frozen_columns"} <= names


async def test_a_document_digest_is_not_mistaken_for_a_credential(database):
    async with database.transaction() as session:
        entry_id = await audit.record(
            session, action="documents.file.replaced", object_type="documents.file",
            object_id="f-1", after={"content_hash": "sha256:ab12", "api_token": "allot_xyz"},
            personal_fields="owner_email",
        )  # fmt: skip
    entry = await entry_of(database, entry_id)
    assert entry.after == {"content_hash": "sha256:ab12", "api_token": "[redacted]"}
    assert entry.personal_fields == ["owner_email"]


@pytest.mark.parametrize(
    "overrides", [{"action": "x" * 101}, {"object_type": ""}, {"object_id": "i" * 256}]
)
async def test_identifiers_that_do_not_fit_are_refused_on_every_backend(database, overrides):
    fields = {"action": "x.changed", "object_type": "x", "object_id": "1", **overrides}
    async with database.transaction() as session:
        with pytest.raises(ValueError, match="must be 1"):
            await audit.record(session, **fields)
