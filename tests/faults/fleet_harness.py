"""`python -m tests.faults.fleet_harness <allot args>`: the real `allot` command with the fault
tests' counting consumer and timer kind registered first (tests/faults/test_kills.py and
test_done_when.py run every role through it, so the relay declares this consumer's queue before
its first publish, as it does the contexts').

- Consumer `faultstest.count` (consumer group `faultstest`) takes `faultstest.ping` and
  `leads.lead.created`; timer kind `faultstest.tick`. Each effect is one row of
  `faults_effects` (cause = the event or timer id, kind = the event type or timer kind, the pid
  of the process that applied it), written in the consumer's or timer's own unit of work. The
  table has no unique key: an effect applied twice is two rows, so the tests count "exactly
  once" independently of the inbox and the timer status the code under test relies on. The
  fleet fixture creates the table (`TABLES`) in its scratch database before any role starts.
- A timer whose payload has `first_attempt_seconds` sleeps that long the first time it is fired
  (a marker file says a try has begun): a test kills its process while that timer's transaction
  is open, knowing it is, and the next process fires it without the wait.

Importing this module registers nothing: the tests import its constants.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

PING = "faultstest.ping"
LEAD_CREATED = "leads.lead.created"  # allot.contexts.leads.events.LEAD_CREATED
CONSUMER = "faultstest.count"
GROUP = "faultstest"
TICK = "faultstest.tick"
TABLES = (
    "CREATE TABLE faults_effects (n BIGSERIAL PRIMARY KEY, cause TEXT NOT NULL, "
    "kind TEXT NOT NULL, pid INTEGER NOT NULL)",
)
MARKERS_VARIABLE = "FLEET_MARKERS"

_INSERT = text("INSERT INTO faults_effects (cause, kind, pid) VALUES (:cause, :kind, :pid)")


async def count(session: Any, event: Any) -> None:
    await session.execute(_INSERT, {"cause": str(event.id), "kind": event.type, "pid": os.getpid()})


async def tick(session: Any, timer: Any) -> None:
    marker = Path(os.environ.get(MARKERS_VARIABLE, ".")) / f"timer-{timer.id}"
    first_try = not marker.exists()
    marker.write_text(str(os.getpid()))
    if first_try:
        await asyncio.sleep(float(timer.payload.get("first_attempt_seconds", 0)))
    await asyncio.sleep(float(timer.payload.get("seconds", 0)))
    await session.execute(_INSERT, {"cause": str(timer.id), "kind": TICK, "pid": os.getpid()})


if __name__ == "__main__":
    from allot.cli.main import main
    from allot.kernel.events import subscribe
    from allot.kernel.timers import timer_handler

    subscribe(CONSUMER, PING, LEAD_CREATED)(count)
    timer_handler(TICK)(tick)

    sys.argv = ["allot", *sys.argv[1:]]
    main()
