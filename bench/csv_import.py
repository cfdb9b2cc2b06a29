"""CSV import of leads: generate a realistic Russian CSV and import it through the code path of
`allot leads import` (csv_import.import_file), on SQLite or PostgreSQL.

The file: `;`-separated UTF-8 as Excel saves it, with ФИО, phones in the usual notations,
e-mail for about half the rows, amounts in roubles ("150 000", "150000,50"), term, priority,
a city and a UTM column (custom attributes); about 5% of the rows repeat an earlier customer's
phone, and about 2% are invalid (no name, a bad phone, e-mail or amount). A direct-mode queue
with `--agents` available agents of capacity 10 takes what it can; the rest waits.

Prints rows/s, the total seconds, the ratio to the 60 s target for 1,000,000 rows, the peak
memory (RSS) of this process, the CPU seconds of this process and of the process reading the
file (with the load average: on a shared machine the seconds say more than the wall clock), and
what the import wrote. PostgreSQL runs in a database of its own, `allot_bench_csv_import`.

Usage: PYTHONPATH=. python -m bench.csv_import [--rows 100000] [--backend sqlite|postgresql]
       [--batch-size 2000] [--agents 50] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.app import load_contexts
from allot.contexts.customers.models import Customer
from allot.contexts.leads import csv_import
from allot.contexts.leads.models import Lead
from allot.contexts.routing.models import WorkItem
from allot.kernel.context import Actor, bound
from allot.kernel.db.base import Base
from allot.kernel.db.engine import Database
from allot.kernel.events.models import OutboxEvent
from bench.common import PG_ADMIN, fresh_database, loans_desk, machine

HEADER = "ID заявки;ФИО;Телефон;Почта;Сумма, руб.;Срок (мес.);Приоритет;Город;utm_source\n"
TARGET_SECONDS = 60.0
TARGET_ROWS = 1_000_000
PG_DATABASE = "allot_bench_csv_import"

FIRST = ["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Анна", "Сергей", "Елена", "Андрей",
         "Наталья", "Михаил", "Татьяна", "Николай", "Ирина", "Павел", "Светлана"]  # fmt: skip
LAST = ["Иванов", "Петров", "Смирнов", "Кузнецов", "Попов", "Васильев", "Соколов", "Михайлов",
        "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов"]  # fmt: skip
MIDDLE = ["Иванович", "Петрович", "Сергеевич", "Алексеевич", "Андреевич", "Николаевич"]
CITIES = ["Москва", "Санкт-Петербург", "Новосибирск", "Екатеринбург", "Казань", "Омск", "Тверь"]
UTM = ["yandex", "vk", "partner-12", "sms", "organic"]
DOMAINS = ["mail.ru", "yandex.ru", "gmail.com", "bk.ru", "inbox.ru"]


def _phone(rng: random.Random, n: int) -> str:
    digits = f"9{rng.choice('0124589')}{n % 100_000_000:08d}"
    a, b, c, d = digits[:3], digits[3:6], digits[6:8], digits[8:]
    shape = rng.random()
    if shape < 0.4:
        return f"8 {a} {b}-{c}-{d}"
    if shape < 0.75:
        return f"+7 ({a}) {b}-{c}-{d}"
    if shape < 0.95:
        return digits
    return f"+7{digits}"


def _amount(rng: random.Random) -> str:
    roubles = rng.randrange(5, 500) * 1000
    shape = rng.random()
    if shape < 0.5:
        return f"{roubles:,}".replace(",", " ")
    if shape < 0.8:
        return str(roubles)
    return f"{roubles},{rng.randrange(0, 100):02d}"


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for n in range(rows):
            person = n if rng.random() > 0.05 or n < 10 else rng.randrange(0, n)
            name = f"{rng.choice(LAST)} {rng.choice(FIRST)} {rng.choice(MIDDLE)}"
            phone = _phone(rng, person * 7919 + 13)
            email = f"user{person}@{DOMAINS[person % len(DOMAINS)]}" if person % 2 else ""
            amount, term = _amount(rng), str(rng.randrange(1, 37))
            bad = rng.random()
            if bad < 0.005:
                name = ""
            elif bad < 0.01:
                phone = "12345"
            elif bad < 0.015:
                email = "ivan@"
            elif bad < 0.02:
                amount = "сто тысяч"
            out.write(
                f"A-{n};{name};{phone};{email};{amount};{term};{rng.randrange(0, 3)};"
                f"{rng.choice(CITIES)};{rng.choice(UTM)}\n"
            )


async def prepare(database: Database, agents: int) -> None:
    async with database.transaction() as session:
        await loans_desk(session, agents=agents, capacity=10)


async def counts(database: Database) -> dict[str, int]:
    found = {}
    async with database.reader() as session:
        for name, model in (("leads", Lead), ("customers", Customer), ("items", WorkItem),
                            ("outbox", OutboxEvent)):  # fmt: skip
            found[name] = await session.scalar(select(func.count()).select_from(model)) or 0
    return found


async def run(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="allot-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"leads-{args.rows}.csv"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.rows)
        print(f"  generated {path} ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    database = await _fresh_database(args.backend, workdir)
    await prepare(database, args.agents)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    started = time.perf_counter()
    cpu_started = time.process_time()
    children_started = _children_cpu()
    try:
        with bound(actor=Actor.system("bench")):
            report = await csv_import.import_file(database, path, batch_size=args.batch_size)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        worker_cpu = _children_cpu() - children_started
        if profiler is not None:
            profiler.stop()
            (workdir / "profile.html").write_text(profiler.output_html())
            print(profiler.output_text(unicode=True, color=False, show_all=False)[:12000])
        written = await counts(database)
    finally:
        await database.dispose()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = report.total / elapsed if elapsed else 0.0
    projected = TARGET_ROWS / rate if rate else float("inf")
    print(
        f"  {args.backend}, {report.total} rows, batch {args.batch_size}: {elapsed:.1f} s, "
        f"{rate:.0f} rows/s; {report.imported} imported, {report.rejected} rejected\n"
        f"  1,000,000 rows at this rate: {projected:.0f} s = {projected / TARGET_SECONDS:.2f} x "
        f"the 60 s target; peak RSS {peak_mib:.0f} MiB\n"
        f"  CPU: {cpu:.1f} s this process ({cpu / elapsed:.0%} of the time), {worker_cpu:.1f} s "
        f"the parsing worker; load average {os.getloadavg()[0]:.1f} at the end\n"
        f"  written: {written}"
    )


async def _fresh_database(backend: str, workdir: Path) -> Database:
    """`fresh_database`, but PostgreSQL's is a database of this benchmark's own: the others'
    `allot_bench` is dropped on their start, and they may be running meanwhile."""
    if backend == "sqlite":
        return await fresh_database(backend, workdir)
    load_contexts()
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{PG_DATABASE}"'))
    await admin.dispose()
    database = Database(PG_ADMIN.rsplit("/", 1)[0] + "/" + PG_DATABASE, pool_size=20)
    async with database.write_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return database


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=csv_import.DEFAULT_BATCH_SIZE)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--workdir", help="Where the CSV (kept between runs) and SQLite file go")
    parser.add_argument("--profile", action="store_true", help="pyinstrument the import")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
