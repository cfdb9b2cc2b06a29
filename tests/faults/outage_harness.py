"""`python -m tests.faults.outage_harness <allot args>`: the real `allot` command with the outage
tests' consumer registered first (tests/faults/test_outages.py runs every role through it, so
the relay declares this consumer's queue before its first publish, as it does the contexts').

Consumer `outagetest.count` (consumer group `outagetest`) takes `outagetest.ping` and
`leads.lead.created`. For each event it inserts one row into `outage_effects` (event id, pid) in
its own unit of work. The table has no unique key: an effect applied twice is two rows, so the
tests count "exactly once" independently of the inbox the code under test relies on.
The `outages` fixture creates both tables (`TABLES`) in the test's database before any role
starts.

A ping whose payload carries `"poison": true` raises for as long as `outage_cure` is empty: a
consumer that always fails on one message until an operator fixes the cause (the test inserts
the row, then replays the dead letter).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sqlalchemy import text

from allot.kernel.events import subscribe

PING = "outagetest.ping"
LEAD_CREATED = "leads.lead.created"  # allot.contexts.leads.events.LEAD_CREATED
CONSUMER = "outagetest.count"
GROUP = "outagetest"
TABLES = (
    "CREATE TABLE outage_effects (n BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, "
    "pid INTEGER NOT NULL)",
    "CREATE TABLE outage_cure (cured_at TIMESTAMPTZ NOT NULL DEFAULT now())",
)


class Poisoned(Exception):
    """The payload this consumer cannot handle (until `outage_cure` has a row)."""


async def count(session: Any, event: Any) -> None:
    if event.payload.get("poison"):
        cured = (await session.execute(text("SELECT count(*) FROM outage_cure"))).scalar_one()
        if not cured:
            raise Poisoned(f"cannot handle poison pill {event.payload.get('n')}")
    await session.execute(
        text("INSERT INTO outage_effects (event_id, pid) VALUES (:event_id, :pid)"),
        {"event_id": str(event.id), "pid": os.getpid()},
    )


if __name__ == "__main__":
    from allot.cli.main import main

    # Registered only in the role processes: a test importing the constants above must not
    # add a consumer to its own process's registry.
    subscribe(CONSUMER, PING, LEAD_CREATED)(count)

    sys.argv = ["allot", *sys.argv[1:]]
    main()
