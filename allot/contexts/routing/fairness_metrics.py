"""Fair share on /metrics: gauges per queue and agent, read from a per-process snapshot.

`/metrics` (kernel/web/health.py) renders the default Prometheus registry synchronously, so a
collector cannot query the database while it is asked. This one answers from the last snapshot
of `fairness.fairness_reports` and, when that snapshot is older than `REFRESH_SECONDS` and no
refresh is running, starts one in the background on the serving event loop (one reader session;
a SQLite reader's statement that runs past a millisecond moves off the loop to a thread).
Whatever the scrape rate, a process reads fair shares at most once per `REFRESH_SECONDS`, in
three statements whatever the number of queues (fairness.py). The price: a scrape shows the
snapshot as of the previous refresh (at most `REFRESH_SECONDS` plus one scrape interval old), and
the first scrape after a process starts shows no fair-share series yet.

Every API process exports the same values (they read the same database): aggregate with
`max by (queue, agent)` rather than `sum`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from allot.contexts.routing.fairness import FairnessReport, fairness_reports
from allot.kernel.clock import utcnow
from allot.kernel.logging import get_logger

REFRESH_SECONDS = 30.0

log = get_logger(__name__)


class FairShareCollector:
    """A Prometheus collector over the latest fair-share snapshot of one database."""

    def __init__(self, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.refresh_seconds = refresh_seconds
        self.database: Any | None = None
        self.reports: list[FairnessReport] = []
        self.taken_at: datetime | None = None
        self.task: asyncio.Task[None] | None = None

    def bind(self, database: Any) -> None:
        """Read from this database from now on (the latest app built in this process)."""
        if database is self.database:
            return
        task = self.task
        if task is not None and not task.done() and not task.get_loop().is_closed():
            task.cancel()  # a refresh of the previous database: its values would be wrong
        self.database, self.reports, self.taken_at, self.task = database, [], None, None

    async def refresh(self) -> None:
        """Take a new snapshot now (the scrape-time refresh runs this in the background)."""
        database = self.database
        if database is None:
            return
        async with database.reader() as session:
            reports = await fairness_reports(session)
        if database is self.database:
            self.reports, self.taken_at = reports, utcnow()

    def _stale(self) -> bool:
        return self.taken_at is None or utcnow() - self.taken_at >= timedelta(
            seconds=self.refresh_seconds
        )

    def _refresh_in_background(self) -> None:
        if self.database is None or (self.task is not None and not self.task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # asked outside the event loop (another exporter's thread)
            return
        self.task = loop.create_task(self._refresh_logged())

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # the metrics keep their last snapshot; the log says why
            log.warning("fair_share_refresh_failed", error=type(exc).__name__)

    def describe(self) -> Iterable[Metric]:
        return list(self._families())  # without samples; registering must not read anything

    def collect(self) -> Iterable[Metric]:
        if self._stale():
            self._refresh_in_background()
        return list(self._families(self.reports))

    def _families(self, reports: Iterable[FairnessReport] = ()) -> Iterator[Metric]:
        share = GaugeMetricFamily(
            "allot_routing_fair_share",
            "Share of the queue's last W assignments that went to the agent",
            labels=["queue", "agent"],
        )
        expected = GaugeMetricFamily(
            "allot_routing_fair_share_expected",
            "The agent's weight over the total weight of the queue's pool (active, not on leave)",
            labels=["queue", "agent"],
        )
        deviation = GaugeMetricFamily(
            "allot_routing_fair_share_deviation",
            "share / expected - 1 over the queue's last W assignments (0 is exactly fair)",
            labels=["queue", "agent"],
        )
        window = GaugeMetricFamily(
            "allot_routing_fair_share_window_assignments",
            "Assignments in the queue's fair-share window (at most W = 10 x its pool size)",
            labels=["queue"],
        )
        for report in reports:
            window.add_metric([report.queue_name], report.assignments)
            for agent in report.agents:
                labels = [report.queue_name, str(agent.agent_id)]
                share.add_metric(labels, agent.share)
                if agent.expected is not None:
                    expected.add_metric(labels, agent.expected)
                if agent.deviation is not None:
                    deviation.add_metric(labels, agent.deviation)
        yield from (share, expected, deviation, window)


COLLECTOR = FairShareCollector()
_registered = False


def install(app: Any) -> None:
    """Export the gauges from this app's database (registered once per process)."""
    global _registered
    COLLECTOR.bind(app.state.database)
    if not _registered:
        REGISTRY.register(COLLECTOR)
        _registered = True
