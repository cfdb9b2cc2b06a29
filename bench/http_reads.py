"""What an authenticated GET costs: CPU per request for a few API reads and pages.

Creates an app on a fresh SQLite file (or PostgreSQL) with its background services running, a
queue, 20 agents and `--leads` leads taken in through `POST /api/v1/leads` (bench/common.py),
then sends each GET from 8 concurrent tasks straight into the ASGI app (no server, no sockets,
no HTTP client: what is measured is the application, its framework and its database layers).
The pages (the manager board's panel, the leads list and a lead) are rendered for the same
bearer token. Prints requests per second and this process's CPU time per request (all its
threads: a read that moved to a thread counts too). No target: these figures are for comparing
changes on one machine.

Usage: python -m bench.http_reads [--backend sqlite|postgresql] [--requests 800] [--leads 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.common import asgi_request, inprocess_app, machine, post_leads

TASKS = 8


async def measure(app: Any, token: str, target: str, requests: int) -> tuple[float, float]:
    """(requests per second, CPU ms per request) of `requests` GETs from TASKS tasks."""

    async def client() -> None:
        for _ in range(requests // TASKS):
            status, body = await asgi_request(app, token, "GET", target)
            if status != 200:
                raise RuntimeError(f"GET {target}: {status} {body[:200]!r}")

    await asyncio.gather(*(client() for _ in range(TASKS)))  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(TASKS)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return requests / wall, 1000 * cpu / requests


async def run(args: argparse.Namespace) -> None:
    async with inprocess_app(args.backend) as (app, token):
        await post_leads(app, token, range(args.leads), TASKS, "read")
        _status, body = await asgi_request(app, token, "GET", "/api/v1/leads?limit=1")
        lead_id = json.loads(body)["items"][0]["id"]
        for target in (
            "/api/v1/me",
            "/api/v1/leads/{id}",
            "/api/v1/leads?limit=50",
            "/api/v1/leads?limit=20&q=9120000",
            "/api/v1/agents?limit=20",
            "/board/panel",
            "/leads",
            "/leads/{id}",
        ):
            path = target.replace("{id}", lead_id)
            rate, cpu_ms = await measure(app, token, path, args.requests)
            print(f"  {args.backend}, GET {target:34s} {rate:6.0f}/s, CPU {cpu_ms:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--leads", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
