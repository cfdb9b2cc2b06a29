"""Every table belongs to the kernel or one context (by name prefix), and no foreign key
crosses from one context's tables into another's."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, MetaData, Table, Uuid

from allot.app import CONTEXTS
from allot.migrations import target_metadata
from tests.architecture.boundaries import cross_context_foreign_keys, unowned_tables

OWNERS = {"kernel", *CONTEXTS}


def test_no_foreign_key_crosses_contexts() -> None:
    problems = cross_context_foreign_keys(target_metadata())
    assert not problems, "\n".join(problems)


def test_every_table_is_prefixed_with_its_owner() -> None:
    problems = unowned_tables(target_metadata(), OWNERS)
    assert not problems, "\n".join(problems)


def test_the_checks_report_a_cross_context_foreign_key_and_an_unowned_table() -> None:
    metadata = MetaData()
    Table("identity_users", metadata, Column("id", Uuid, primary_key=True))
    Table(
        "identity_sessions",
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("user_id", Uuid, ForeignKey("identity_users.id")),  # same context: fine
    )
    Table(
        "leads_leads",
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("owner_id", Uuid, ForeignKey("identity_users.id")),
    )
    Table("stuff", metadata, Column("id", Uuid, primary_key=True))

    assert cross_context_foreign_keys(metadata) == [
        "leads_leads.owner_id -> identity_users.id: a foreign key into another context's "
        "table; store the id without a foreign key"
    ]
    unowned = unowned_tables(metadata, {"kernel", "identity"})
    assert sorted(line.split(":")[0] for line in unowned) == ["leads_leads", "stuff"]
