"""Store many leads quickly, for benchmarks that ask whether intake stays flat as tables grow.

The leads go in through the bulk import path (`create_leads_bulk`: customers, contacts, leads,
activities, work items, audit and outbox rows, as an import writes them), 2,000 per transaction,
before any queue exists. Then they are closed as an old database's leads would be: leads `lost`,
work items `cancelled`, their outbox events `dispatched` (the dispatcher of the benchmarked
server must not spend the run on a backlog of 600,000 old events), and the database vacuumed and
analysed as an old one would be. Nothing is left for routing.

Usage: PYTHONPATH=. python -m bench.seed DATABASE_URL [--leads 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from sqlalchemy import update

from allot.app import load_contexts
from allot.contexts.leads.bulk_intake import StatisticsKeeper, create_leads_bulk
from allot.contexts.leads.intake import NewLead
from allot.contexts.leads.models import Lead
from allot.contexts.routing.models import WorkItem
from allot.kernel.clock import utcnow
from allot.kernel.context import Actor, bound
from allot.kernel.db.engine import Database
from allot.kernel.events.models import OutboxEvent

BATCH = 2_000


def _lead(n: int) -> NewLead:
    return NewLead(
        source="seed",
        external_id=f"seed-{n}",
        customer_name=f"Клиент {n}",
        customer_phone=f"+7950{n % 10_000_000:07d}",
        amount_minor=(n % 50 + 1) * 1_000_000,
        term_months=n % 24 + 1,
        priority=n % 3,
    )


async def preload_leads(url: str, count: int) -> None:
    """Store `count` closed leads (see the module docstring) in the database at `url`."""
    load_contexts()
    database = Database(url)
    statistics = StatisticsKeeper(database)
    try:
        with bound(actor=Actor.system("bench-seed")):
            for start in range(0, count, BATCH):
                rows = [_lead(n) for n in range(start, min(start + BATCH, count))]
                async with database.transaction() as session:
                    await create_leads_bulk(session, rows)
                await statistics.wrote(len(rows))
        async with database.transaction() as session:
            now = utcnow()
            await session.execute(
                update(Lead)
                .where(Lead.status != "lost")
                .values(status="lost", lost_reason="not_interested", closed_at=now)
            )
            await session.execute(
                update(WorkItem)
                .where(WorkItem.state == "waiting")
                .values(state="cancelled", closed_at=now)
            )
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.status == "pending")
                .values(status="dispatched", dispatched_at=now)
            )
        # A database that grew to this size over months has been vacuumed and analysed; one
        # that grew in a minute has not, and autovacuum would do it during the measurement.
        if database.is_sqlite:
            async with database.write_engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE")
        else:
            async with database.write_engine.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.exec_driver_sql("VACUUM ANALYZE")
    finally:
        await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--leads", type=int, default=200_000)
    args = parser.parse_args()
    started = time.perf_counter()
    asyncio.run(preload_leads(args.url, args.leads))
    print(f"stored {args.leads} leads in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
