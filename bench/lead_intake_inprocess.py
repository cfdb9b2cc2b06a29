"""Lead intake through the whole HTTP stack, in one process, without a server or sockets.

Creates an app on a fresh SQLite file (or PostgreSQL), a queue and 3 available agents, then
posts leads to `POST /api/v1/leads` through httpx's ASGI transport from N concurrent tasks.
Measures what the application and database layers cost per lead (no uvicorn, no network), which
is where a per-statement overhead such as a thread hand-off shows. A lead counts when the answer
is 201 and it carries an `assignee_id`.

Usage: PYTHONPATH=. python -m bench.lead_intake_inprocess [--leads 2000] [--tasks 8]
       [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx

from allot.app import create_app
from allot.contexts import identity
from allot.contexts.routing import agent_service, queue_service
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from bench.common import fresh_database, machine, post_leads

AGENTS = 3


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
        run_background_workers=False,
        log_level="WARNING",
        api_rate_limit="",  # one token pushes every lead: not a client to throttle here
    )
    app = create_app(settings, database, run_background=False)
    token = await prepare(database)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            result = await post_leads(http, token, args.leads, args.tasks, "lead")
    finally:
        await database.dispose()
    print(
        f"  {args.backend}, {args.tasks} tasks, {args.leads} leads: "
        f"{result['placed_per_s']:.0f} leads/s,"
        f" p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, max {result['max']:.1f} ms,"
        f" {result['failed']:.0f} not placed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
