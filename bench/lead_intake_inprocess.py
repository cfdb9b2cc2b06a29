"""Lead intake through the whole application, in one process, without a server or sockets.

Creates an app on a fresh SQLite file (or PostgreSQL), a queue and 20 available agents, runs the
app's background services as `allot serve` does (dispatcher, timers, WAL checkpoints; off with
`--no-background`), then posts leads to `POST /api/v1/leads` straight into the ASGI app from N
concurrent tasks, after a warm-up of 400 leads. Measures what the application and database
layers cost per lead: this process's CPU time per lead (all its threads), with no uvicorn, no
network and no load generator sharing the two cores, so it moves less with the machine than
bench/http_intake.py does. A lead counts when the answer is 201 and it carries an
`assignee_id`. For profiling, run it under py-spy or cProfile.

Usage: python -m bench.lead_intake_inprocess [--leads 4000] [--tasks 8]
       [--backend sqlite|postgresql] [--no-background]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from allot.app import create_app
from allot.contexts import identity
from allot.contexts.routing import agent_service, queue_service
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from bench.common import fresh_database, machine, post_leads

AGENTS = 20
WARM_UP = 400


async def prepare(database: Database) -> str:
    """Queue, agents and an admin; returns the admin's bearer token."""
    async with database.transaction() as session:
        await queue_service.create_queue(
            session, QueueCreate(name="q", member_expression='"loans" in skills')
        )
        for n in range(AGENTS):
            await agent_service.create_agent(
                session,
                AgentCreate(name=f"agent {n}", capacity=1000, skills=["loans"], status="available"),
            )
        admin = await identity.create_user(
            session, email="bench@example.com", password="x" * 12, roles=["admin"]
        )
        _token_id, token = await identity.issue_token(session, user_id=admin.id, name="bench")
    return token


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="allot-bench-"))
    database = await fresh_database(args.backend, workdir)
    settings = Settings(
        data_dir=workdir,
        secret_key="x" * 32,  # type: ignore[arg-type]
        database_url=database.url,
        run_background_workers=args.background,
        log_level="WARNING",
        api_rate_limit="",  # one token pushes every lead: not a client to throttle here
    )
    app = create_app(settings, database, run_background=args.background)
    token = await prepare(database)
    lifespan = app.router.lifespan_context(app) if args.background else contextlib.nullcontext()
    try:
        async with lifespan:
            await post_leads(app, token, range(WARM_UP), args.tasks, "warm-up")
            result = await post_leads(app, token, range(args.leads), args.tasks, "lead")
    finally:
        await database.dispose()
    print(
        f"  {args.backend}, {args.tasks} tasks, {args.leads} leads"
        f"{'' if args.background else ', no background services'}: "
        f"{result['placed_per_s']:.0f} leads/s, CPU {result['cpu_ms_per_lead']:.2f} ms per lead,"
        f" p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, max {result['max']:.1f} ms,"
        f" {result['failed']:.0f} not placed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--leads", type=int, default=4000)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument(
        "--no-background", dest="background", action="store_false", help="no dispatcher/timers"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
