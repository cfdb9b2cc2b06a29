"""`allot leads import FILE`: summary, rejected lines and exit codes (0 all imported, 1 some
rejected, 2 unreadable file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.cli.conftest import Invoke


def _scalar(url: str, sql: str) -> object:
    async def read() -> object:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            value = (await conn.execute(text(sql))).scalar()
        await engine.dispose()
        return value

    return asyncio.run(read())


def test_import_prints_the_summary_and_the_rejected_lines(
    cli: Invoke, sqlite_url: str, tmp_path: Path
) -> None:
    assert cli("migrate").exit_code == 0
    csv_file = tmp_path / "leads.csv"
    csv_file.write_bytes(
        "ФИО;Телефон;Сумма\nИван;8 912 345-67-89;150 000\n;8 912 345-67-80;\nОльга;123;1\n".encode(
            "cp1251"
        )
    )
    result = cli("leads", "import", str(csv_file), "--source", "partner", "--batch-size", "2")
    assert result.exit_code == 1, result.output
    assert "3\tФИО\tRequired" in result.output
    assert "4\tТелефон\tNot a valid phone number" in result.output
    assert "3 rows, 1 imported, 2 rejected." in result.output
    assert _scalar(sqlite_url, "SELECT source FROM leads_leads") == "partner"
    assert _scalar(sqlite_url, "SELECT actor_label FROM audit_entries WHERE action = "
                               "'leads.import.batch' LIMIT 1") == "cli"  # fmt: skip

    good = tmp_path / "good.csv"
    good.write_text("name,phone\nПётр,+7 (912) 345-67-81\n", encoding="utf-8-sig")
    result = cli("leads", "import", str(good))
    assert result.exit_code == 0, result.output
    assert "1 rows, 1 imported, 0 rejected." in result.output


def test_unreadable_files_exit_with_2(cli: Invoke, tmp_path: Path) -> None:
    assert cli("migrate").exit_code == 0
    assert cli("leads", "import", str(tmp_path / "missing.csv")).exit_code == 2
    workbook = tmp_path / "leads.xlsx"
    workbook.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    result = cli("leads", "import", str(workbook))
    assert result.exit_code == 2
    assert "Excel workbook" in result.output
