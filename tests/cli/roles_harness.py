"""`python -m tests.cli.roles_harness <allot args>`: the real `allot` command, with one test
consumer and one test timer kind registered first (tests/cli/test_roles.py runs it).

Each effect is an outbox row keyed by what caused it (`rolestest.effect` per consumed event,
`rolestest.fired` per fired timer), written in the consumer's or timer's own unit of work: the
tests count them to prove "exactly once", independently of the inbox and the timer status that
the code under test uses to get there. Before its (optionally slow) work, each handler leaves a
marker file, so a test can signal a process while work is in flight without guessing when.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from allot.kernel.events import publish, subscribe
from allot.kernel.timers import timer_handler

MARKERS = Path(os.environ.get("ROLES_HARNESS_MARKERS", "."))


@subscribe("rolestest.count", "rolestest.ping")
async def count(session, event):
    (MARKERS / f"event-{event.id}").touch()
    await asyncio.sleep(float(event.payload.get("seconds", 0)))  # the work takes this long
    await publish(session, type="rolestest.effect", aggregate_type="rolestest",
                  aggregate_id=str(event.id), payload={"pid": os.getpid()})  # fmt: skip


@timer_handler("rolestest.tick")
async def tick(session, timer):
    (MARKERS / f"timer-{timer.id}").touch()
    await asyncio.sleep(float(timer.payload.get("seconds", 0)))
    await publish(session, type="rolestest.fired", aggregate_type="rolestest",
                  aggregate_id=str(timer.id), payload={"pid": os.getpid()})  # fmt: skip


if __name__ == "__main__":
    from allot.cli.main import main

    sys.argv = ["allot", *sys.argv[1:]]
    main()
