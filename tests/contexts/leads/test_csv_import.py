"""CSV import: file shapes (encodings, separators, headers), rows imported whole or rejected with
their physical line number and reason, dedup within the file and against stored customers and
leads, routing kept consistent, one audit entry per batch, and no half rows when the database
refuses one."""

from __future__ import annotations

import csv
import gc
import multiprocessing
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from allot.contexts.audit.models import AuditEntry
from allot.contexts.customers.models import Contact, Customer
from allot.contexts.leads import csv_import
from allot.contexts.leads.csv_import import Columns, header_key, inspect, parse_amount
from allot.contexts.leads.import_jobs import get as get_job
from allot.contexts.leads.models import Activity, Lead
from allot.contexts.routing.models import WorkItem
from allot.kernel.db import Database
from allot.kernel.events import OutboxEvent
from tests.contexts.routing.helpers import assert_invariants

from .helpers import events_of, item_of, lead_desk, new_lead

PHONE_MESSAGE = "Not a valid phone number (e.g. +7 912 345-67-89)"


def write(
    tmp_path: Path, content: str, *, encoding: str = "utf-8", name: str = "leads.csv"
) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode(encoding))
    return path


async def count(database: Database, model: Any, *where: Any) -> int:
    async with database.reader() as session:
        found = await session.scalar(select(func.count()).select_from(model).where(*where))
    return int(found or 0)


async def leads_by_external_id(database: Database) -> dict[str | None, Lead]:
    async with database.reader() as session:
        rows = (await session.execute(select(Lead))).scalars()
        return {lead.external_id: lead for lead in rows}


def entries(report: csv_import.ImportReport) -> list[tuple[int, str, str]]:
    return sorted((r["line"], r["field"], r["reason"]) for r in report.rejects)


# -- the file, without a database -------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "kopecks"),
    [
        ("150000", 15_000_000),
        ("150 000", 15_000_000),
        ("150\u00a0000,50", 15_000_050),
        ("150000.5", 15_000_050),
        ("150 000 ₽", 15_000_000),
        ("99 руб.", 9_900),
        ("0", 0),
    ],
)
def test_amounts_in_roubles_as_typed(typed: str, kopecks: int) -> None:
    assert parse_amount(typed) == kopecks


@pytest.mark.parametrize("typed", ["150,000", "1.500.000", "сто тысяч", "-5", "1,5,0", "12,345"])
def test_ambiguous_or_wrong_amounts_are_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(typed)


def test_headers_in_russian_and_english_map_to_fields() -> None:
    header = ["\ufeffФ.И.О.", "Телефон", "E-mail", "Сумма, руб.", "Срок (мес.)", "ID заявки",
              "Приоритет", "Источник", "Город", "Город"]  # fmt: skip
    columns = Columns.of(header)
    assert columns.fields == {"name": 0, "phone": 1, "email": 2, "amount": 3, "term": 4,
                              "external_id": 5, "priority": 6, "source": 7}  # fmt: skip
    assert columns.attributes == [(8, "Город"), (9, "Город_10")]
    assert columns.label("amount") == "Сумма, руб."
    assert header_key("Срок (мес.)") == "срок"


def test_shapes_of_files_excel_saves(tmp_path: Path) -> None:
    cp1251 = write(tmp_path, "ФИО;Телефон\nИван;89123456789\n", encoding="cp1251", name="a")
    assert (inspect(cp1251).encoding, inspect(cp1251).delimiter) == ("cp1251", ";")
    bom = write(tmp_path, "name,phone\nIvan,89123456789\n", encoding="utf-8-sig", name="b")
    assert (inspect(bom).encoding, inspect(bom).delimiter) == ("utf-8-sig", ",")
    tabs = write(tmp_path, "ФИО\tТелефон\nИван\t8912\n", encoding="utf-16", name="c")
    assert (inspect(tabs).encoding, inspect(tabs).delimiter) == ("utf-16", "\t")
    workbook = tmp_path / "d.xlsx"
    workbook.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(csv_import.UnreadableFile, match="Excel"):
        inspect(workbook)


# -- imports ----------------------------------------------------------------------------------
MIXED = (
    "ФИО;Телефон;Почта;Сумма, руб.;Срок (мес.);ID заявки;Город\n"  # 1
    "Иван Петров;8 912 345-67-89;Ivan@Mail.ru;150 000;12;A-1;Омск\n"  # 2 ok
    ";8 912 345-67-80;;;;A-2;\n"  # 3 no name
    "Мария Сидорова;12345;;;;A-3;\n"  # 4 bad phone
    "\n"  # 5 blank: skipped
    '"Пётр ""Петя""\n'  # 6 a quoted name across two lines: one record, starting on line 6
    'Сидоров";+7 (912) 345-67-81;;150000,50;6;A-4;Тверь\n'  # 7
    "Анна;+7 912 345-67-82;anna@;сто;x;A-5;\n"  # 8 three bad cells
    "Олег;8 912 345 67 83;;1000;12;A-1;\n"  # 9 repeats line 2's external id
)


async def test_each_row_is_imported_or_rejected_with_its_line_and_reason(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    report = await csv_import.import_file(database, write(tmp_path, MIXED), source="excel")

    leads = await leads_by_external_id(database)
    assert set(leads) == {"A-1", "A-4"}
    assert (report.status, report.total, report.imported, report.rejected) == ("done", 6, 2, 4)
    duplicate = f"duplicate external_id, existing lead {leads['A-1'].id}"
    assert entries(report) == [
        (3, "ФИО", "Required"),
        (4, "Телефон", PHONE_MESSAGE),
        (8, "Почта", "Not a valid e-mail address"),
        (8, "Срок (мес.)", "Enter a whole number"),
        (8, "Сумма, руб.", "Enter an amount in roubles, e.g. 150000 or 150000,50"),
        (9, "ID заявки", duplicate),
    ]
    [repeat] = [r for r in report.rejects if r["line"] == 9]
    assert (repeat["code"], repeat["lead_id"]) == ("duplicate", str(leads["A-1"].id))

    ivan, petr = leads["A-1"], leads["A-4"]
    assert (ivan.source, ivan.amount_minor, ivan.currency, ivan.term_months) == (
        "excel", 15_000_000, "RUB", 12)  # fmt: skip
    assert ivan.attributes == {"Город": "Омск"}
    assert (petr.amount_minor, petr.term_months) == (15_000_050, 6)
    assert petr.attributes == {"Город": "Тверь"}
    async with database.reader() as session:
        card = await session.get(Customer, petr.customer_id)
        contacts = set((await session.execute(select(Contact.kind, Contact.value))).all())
    assert card is not None
    assert card.name == 'Пётр "Петя" Сидоров'
    assert contacts == {("phone", "+79123456789"), ("email", "ivan@mail.ru"),
                        ("phone", "+79123456781")}  # fmt: skip

    async with database.reader() as session:
        job = await get_job(session, report.import_id)
    assert job is not None
    assert (job.status, job.total_rows, job.processed_rows) == ("done", 6, 6)
    assert (job.imported_rows, job.rejected_rows, job.file_name) == (2, 4, "leads.csv")
    assert sorted((r["line"], r["field"]) for r in job.rejects) == [
        (line, field) for line, field, _reason in entries(report)
    ]


async def test_cp1251_semicolons_and_dedup_against_stored_customers_and_leads(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    stored = await new_lead(
        database, source="partner", external_id="P-7", customer_name="Ольга Ким",
        customer_phone="+7 913 111-22-33",
    )  # fmt: skip
    content = (
        "Источник;ID заявки;ФИО;Телефон;E-mail\n"
        "partner;P-7;Ольга Ким;+7 913 111-22-33;\n"  # 2: that lead again
        "partner;P-8;Ольга Ким;8 (913) 111-22-33;olga@example.ru\n"  # 3: her card, a new e-mail
        "partner;P-9;Ольга К.;;OLGA@example.ru\n"  # 4: found by that e-mail (same file)
        "partner;P-10;Сергей;8 913 111 22 44;\n"  # 5: new
        "partner;P-11;Сергей Иванов;9131112244;\n"  # 6: line 5's phone: the same new card
    )
    report = await csv_import.import_file(
        database, write(tmp_path, content, encoding="cp1251"), batch_size=2
    )

    assert (report.imported, report.rejected) == (4, 1)
    assert entries(report) == [
        (2, "ID заявки", f"duplicate external_id, existing lead {stored.id}")
    ]
    leads = await leads_by_external_id(database)
    assert leads["P-8"].customer_id == leads["P-9"].customer_id == stored.customer_id
    assert leads["P-10"].customer_id == leads["P-11"].customer_id != stored.customer_id
    assert await count(database, Customer) == 2
    async with database.reader() as session:
        olga = set(
            (await session.execute(
                select(Contact.kind, Contact.value).where(Contact.customer_id == stored.customer_id)
            )).all()
        )  # fmt: skip
    assert olga == {("phone", "+79131112233"), ("email", "olga@example.ru")}
    updated = await events_of(database, "customers.customer.updated")
    assert [(e.payload["customer_id"], e.payload["changed"]) for e in updated] == [
        (str(stored.customer_id), ["added_emails"])
    ]
    created = await events_of(database, "customers.customer.created")
    assert len(created) == 2  # Ольга's card from the API, Сергей's from the import


async def test_routing_places_what_agents_can_take_and_leads_mirror_it(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    agents = await lead_desk(database, agents=2, capacity=2)
    lines = ["name,phone,priority"] + [
        f"Клиент {n},+7 912 500-00-{n:02d},{n % 3}" for n in range(7)
    ]
    report = await csv_import.import_file(
        database, write(tmp_path, "\n".join(lines) + "\n"), batch_size=3
    )

    assert report.imported == 7
    await assert_invariants(database)
    leads = list((await leads_by_external_id_all(database)).values())
    assigned = 0
    for lead in leads:
        item = await item_of(database, lead.id)
        assert item is not None
        assert item.kind == "lead"
        if item.state == "assigned":
            assigned += 1
            assert lead.assignee_id == item.owner_agent_id
            assert lead.assignee_id in {a.id for a in agents}
        else:
            assert (item.state, lead.assignee_id) == ("waiting", None)
    assert assigned == 4  # 2 agents x capacity 2; the other 3 wait in the queue
    assert await count(database, Activity, Activity.kind == "assigned") == 4
    assert len(await events_of(database, "leads.lead.assigned")) == 4
    assert len(await events_of(database, "routing.item.assigned")) == 4
    waiting = await events_of(database, "routing.item.waiting")
    assert len(waiting) == 3
    assert {e.payload["reason"] for e in waiting} == {"no_eligible_agent"}


async def leads_by_external_id_all(database: Database) -> dict[uuid.UUID, Lead]:
    async with database.reader() as session:
        return {lead.id: lead for lead in (await session.execute(select(Lead))).scalars()}


async def test_one_audit_entry_per_batch_and_one_created_event_per_lead(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    lines = ["ФИО;Телефон"] + [f"Клиент {n};+7 912 600-00-{n:02d}" for n in range(5)]
    lines.insert(3, "Без телефона;12")  # line 4: rejected
    report = await csv_import.import_file(
        database, write(tmp_path, "\n".join(lines) + "\n"), batch_size=2
    )

    assert (report.imported, report.rejected) == (5, 1)
    async with database.reader() as session:
        batches = list(
            (await session.execute(
                select(AuditEntry).where(AuditEntry.action == "leads.import.batch")
                .order_by(AuditEntry.id)
            )).scalars()
        )  # fmt: skip
        per_lead = await session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.object_type == "leads.lead")
        )
    assert per_lead == 0  # no audit entry per lead: one per batch
    # 6 rows in batches of 2: lines 2-3, 4-5 (4 rejected before the database), 6-7
    ranges = [(b.after["first_line"], b.after["last_line"], b.after["imported"]) for b in batches]
    assert ranges == [(2, 3, 2), (5, 5, 1), (6, 7, 2)]
    assert {b.object_id for b in batches} == {str(report.import_id)}
    created = await events_of(database, "leads.lead.created")
    leads = await leads_by_external_id_all(database)
    assert sorted(e.payload["lead_id"] for e in created) == sorted(str(i) for i in leads)
    # The payload create_lead writes, key for key.
    api_lead = await new_lead(database)
    [api_event] = [e for e in await events_of(database, "leads.lead.created")
                   if e.payload["lead_id"] == str(api_lead.id)]  # fmt: skip
    assert set(created[0].payload) == set(api_event.payload)
    assert created[0].headers.keys() == api_event.headers.keys()


TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON leads_leads WHEN NEW.external_id = 'BOOM' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN "
        "IF NEW.external_id = 'BOOM' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON leads_leads FOR EACH ROW "
        "EXECUTE FUNCTION refuse_boom()",
    ],
}
DROP = {
    "sqlite": ["DROP TRIGGER IF EXISTS refuse_boom"],
    "postgresql": ["DROP TRIGGER IF EXISTS refuse_boom ON leads_leads",
                   "DROP FUNCTION IF EXISTS refuse_boom()"],
}  # fmt: skip


async def _run_sql(database: Database, statements: list[str]) -> None:
    async with database.write_engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def test_a_row_the_database_refuses_leaves_nothing_behind(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    await lead_desk(database, agents=1, capacity=1)
    lines = ["ID заявки;ФИО;Телефон"] + [
        f"{'BOOM' if n == 2 else f'E-{n}'};Клиент {n};+7 912 700-00-{n:02d}" for n in range(6)
    ]
    await _run_sql(database, TRIGGERS[database.dialect])
    try:
        report = await csv_import.import_file(
            database, write(tmp_path, "\n".join(lines) + "\n"), batch_size=10
        )
    finally:
        await _run_sql(database, DROP[database.dialect])

    assert (report.imported, report.rejected, report.total) == (5, 1, 6)
    [refused] = report.rejects
    assert (refused["line"], refused["code"]) == (4, "refused")
    assert "refused by the test" in refused["reason"]
    # The refused row's customer, work item and events were rolled back with it.
    assert await count(database, Lead) == 5
    assert await count(database, WorkItem) == 5
    assert await count(database, Customer) == 5
    assert await count(database, Contact, Contact.value == "+79127000002") == 0
    assert len(await events_of(database, "leads.lead.created")) == 5
    assert len(await events_of(database, "customers.customer.created")) == 5
    assert await count(database, OutboxEvent, OutboxEvent.type == "routing.item.waiting") == 4
    await assert_invariants(database)
    async with database.reader() as session:
        job = await get_job(session, report.import_id)
    assert job is not None
    assert (job.processed_rows, job.imported_rows, job.rejected_rows) == (6, 5, 1)


async def test_unreadable_files_fail_the_import_with_the_reason(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    workbook = tmp_path / "leads.xlsx"
    workbook.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    report = await csv_import.import_file(database, workbook)
    assert (report.status, report.total) == ("failed", 0)
    assert report.error == csv_import.EXCEL_FILE

    nameless = await csv_import.import_file(database, write(tmp_path, "phone\n89123456789\n"))
    assert nameless.error == csv_import.NO_NAME_COLUMN
    async with database.reader() as session:
        job = await get_job(session, nameless.import_id)
    assert job is not None
    assert (job.status, job.error) == ("failed", csv_import.NO_NAME_COLUMN)
    assert await count(database, Lead) == 0


async def test_cells_with_nul_and_extra_cells_are_rejected(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    content = "name,phone\nИван\x00,89123456789\nОльга,89123456780,лишнее\nПётр,89123456781,\n"
    report = await csv_import.import_file(database, write(tmp_path, content))
    assert entries(report) == [
        (2, "name", "Contains a NUL character"),
        (3, "", "More cells than the header has columns"),
    ]
    assert report.imported == 1  # a trailing empty cell (Excel writes them) is no extra cell


# -- big files: read and validated in a second process ----------------------------------------
async def test_a_file_read_in_a_second_process_gives_the_same_import(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    thresholds = gc.get_threshold()
    report = await csv_import.import_file(
        database, write(tmp_path, MIXED), source="excel", batch_size=2, parse_in_worker=True
    )

    assert multiprocessing.active_children() == []  # the worker is gone
    assert gc.get_threshold() == thresholds  # as the import found them
    leads = await leads_by_external_id(database)
    assert set(leads) == {"A-1", "A-4"}
    assert (report.status, report.total, report.imported, report.rejected) == ("done", 6, 2, 4)
    assert entries(report) == [
        (3, "ФИО", "Required"),
        (4, "Телефон", PHONE_MESSAGE),
        (8, "Почта", "Not a valid e-mail address"),
        (8, "Срок (мес.)", "Enter a whole number"),
        (8, "Сумма, руб.", "Enter an amount in roubles, e.g. 150000 or 150000,50"),
        (9, "ID заявки", f"duplicate external_id, existing lead {leads['A-1'].id}"),
    ]
    assert (leads["A-4"].amount_minor, leads["A-4"].attributes) == (15_000_050, {"Город": "Тверь"})
    assert len(await events_of(database, "leads.lead.created")) == 2
    async with database.reader() as session:
        job = await get_job(session, report.import_id)
    assert job is not None
    assert (job.status, job.processed_rows, job.imported_rows, job.rejected_rows) == (
        "done", 6, 2, 4)  # fmt: skip


async def test_a_file_the_second_process_cannot_read_fails_the_import(
    database: Database, clock: Any, tmp_path: Path
) -> None:
    lines = ["ФИО;Телефон"] + [f"Клиент {n};+7 912 900-00-{n:02d}" for n in range(4)]
    lines.append("Клиент;" + "9" * (csv.field_size_limit() + 1))  # line 6: no CSV reader takes it
    report = await csv_import.import_file(
        database, write(tmp_path, "\n".join(lines) + "\n"), batch_size=2, parse_in_worker=True
    )

    assert multiprocessing.active_children() == []
    assert report.status == "failed"
    assert report.error is not None
    assert report.error.startswith("Not a CSV file: field larger than field limit")
    assert (report.total, report.imported) == (4, 4)  # the batches before it stay imported
    async with database.reader() as session:
        job = await get_job(session, report.import_id)
    assert job is not None
    assert (job.status, job.error, job.imported_rows) == ("failed", report.error, 4)
