"""A background worker loop: do a round of work; when a round found nothing, sleep until woken
(by a commit that produced work) or until the poll interval passes (so work that became due by
the clock alone — a timer, a retry's backoff — is still picked up)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from allot.kernel.logging import get_logger

log = get_logger(__name__)


class WakeableLoop:
    def __init__(
        self, name: str, work_round: Callable[[], Awaitable[int]], idle_poll_seconds: float
    ) -> None:
        self.name = name
        self.work_round = work_round
        self.idle_poll_seconds = idle_poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                done = await self.work_round()
            except Exception:  # the loop must survive a database hiccup
                log.exception("background round failed", loop=self.name)
                done = 0
            if done == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_poll_seconds)
                self._wake.clear()
