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

from bench.common import inprocess_app, machine, post_leads

WARM_UP = 400


async def run(args: argparse.Namespace) -> None:
    async with inprocess_app(args.backend, background=args.background) as (app, token):
        await post_leads(app, token, range(WARM_UP), args.tasks, "warm-up")
        result = await post_leads(app, token, range(args.leads), args.tasks, "lead")
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
