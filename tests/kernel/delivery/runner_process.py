"""A delivery runner in a process of its own, for the kill tests (tests/faults/test_deliveries.py):

    python -m tests.kernel.delivery.runner_process DATABASE_URL SMTP_PORT BATCH LEASE TIMEOUT

It runs the real `DeliveryRunner` with an email channel pointed at the test's SMTP server and
prints "runner started" once it runs; it stops only when killed. It imports the kernel alone (no
context), so it starts in a second or two.
"""

from __future__ import annotations

import asyncio
import sys

from allot.kernel.db.engine import Database
from allot.kernel.delivery import DeliveryRunner
from allot.kernel.delivery.channels.email import EmailChannel
from allot.kernel.logging import configure_logging, get_logger

STARTED = "runner started"


async def main(url: str, smtp_port: int, batch: int, lease: float, timeout: float) -> None:
    configure_logging("INFO", json=True)
    database = Database(url, pool_size=4)
    channel = EmailChannel(
        host="127.0.0.1", port=smtp_port, sender="allot@crm.example.ru", security="none",
        timeout_seconds=timeout,
    )  # fmt: skip
    runner = DeliveryRunner(
        database, {"email": channel}, batch_size=batch, lease_seconds=lease,
        retry_base_seconds=0.5, idle_poll_seconds=0.1,
    )  # fmt: skip
    runner.start()
    get_logger("runner_process").info(STARTED)
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, port, batch, lease, timeout = sys.argv[1:6]
    asyncio.run(main(url, int(port), int(batch), float(lease), float(timeout)))
