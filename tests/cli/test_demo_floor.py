"""`allot demo`: the routing and leads demo data, and the simulated floor that keeps it moving."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.app import create_app
from allot.cli.demo import (
    AGENTS,
    BIG_LOANS_QUEUE,
    HUMAN_OPERATOR_EMAIL,
    LOANS_QUEUE,
    SIMULATED_EMAILS,
)
from allot.cli.demo_floor import DemoFloor, install_floor
from allot.cli.demo_history import history_leads
from allot.kernel.clock import ManualClock, set_clock
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from tests.cli.conftest import Invoke

COUNTS = """
SELECT (SELECT count(*) FROM routing_agents), (SELECT count(*) FROM routing_queues),
       (SELECT count(*) FROM routing_queue_members), (SELECT count(*) FROM leads_leads),
       (SELECT count(*) FROM routing_work_items), (SELECT count(*) FROM customers_customers),
       (SELECT count(*) FROM identity_users)
"""


async def _fetch(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


def _rows(url: str, sql: str, **params: Any) -> list[Any]:
    return asyncio.run(_fetch(url, sql, **params))


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    # Starts now: the demo data was just written with the real clock.
    manual = ManualClock(datetime.now(UTC))
    previous = set_clock(manual)
    yield manual
    set_clock(previous)


def test_demo_data_is_loaded_once_with_agents_linked_to_the_demo_users(
    cli: Invoke, demo_url: str
) -> None:
    counts = _rows(demo_url, COUNTS)

    again = cli("demo", "--no-serve")

    assert again.exit_code == 0, again.output
    assert "Demo data already present" in again.output
    assert _rows(demo_url, COUNTS) == counts
    agents, queues, members, leads, items, _, _ = counts[0]
    now = datetime.now(UTC)
    big_loans = len([a for a in AGENTS if "big_loans" in a.skills])  # also in «Крупные займы»
    assert (agents, queues, members, leads, items) == (
        len(AGENTS), 2, len(AGENTS) + big_loans, len(history_leads(now)), len(history_leads(now))
    )  # fmt: skip
    linked = _rows(
        demo_url,
        "SELECT u.email, a.status FROM routing_agents a JOIN identity_users u ON u.id = a.user_id",
    )
    assert sorted(linked) == sorted((a.email, "available") for a in AGENTS)
    queue = _rows(
        demo_url,
        "SELECT name, work_kinds, member_expression, offer_mode FROM routing_queues ORDER BY name",
    )
    assert queue == [
        (LOANS_QUEUE.name, '["lead"]', LOANS_QUEUE.member_expression, LOANS_QUEUE.offer_mode),
        (BIG_LOANS_QUEUE.name, "[]", BIG_LOANS_QUEUE.member_expression, "offer"),
    ]


def test_seeded_leads_stand_at_every_stage_and_the_human_starts_with_an_empty_desk(
    demo_url: str,
) -> None:
    by_status = dict(_rows(demo_url, "SELECT status, count(*) FROM leads_leads GROUP BY status"))
    assert set(by_status) == {"new", "in_progress", "qualified", "won", "lost"}
    # Events were delivered while loading: leads past "new" show their operator.
    unassigned_worked = _rows(
        demo_url,
        "SELECT count(*) FROM leads_leads WHERE status != 'new' AND assignee_id IS NULL",
    )
    assert unassigned_worked == [(0,)]
    human = _rows(
        demo_url,
        "SELECT a.load, (SELECT count(*) FROM leads_leads l WHERE l.assignee_id = a.id) "
        "FROM routing_agents a WHERE a.email = :email",
        email=HUMAN_OPERATOR_EMAIL,
    )
    assert human == [(0, 0)]


def test_welcome_says_what_to_look_at_and_who_to_sign_in_as(cli: Invoke) -> None:
    result = cli("demo", "--no-serve", "--no-floor")

    assert result.exit_code == 0, result.output
    for page in ("/board", "/leads", "/inbox"):
        assert f"http://127.0.0.1:8000{page}" in result.output
    assert HUMAN_OPERATOR_EMAIL in result.output


# -- the simulator ------------------------------------------------------------------------------
PENDING_OFFERS = """
SELECT o.id, a.email FROM routing_offers o JOIN routing_agents a ON a.id = o.agent_id
WHERE o.status = 'pending'
"""


async def _pending_by_email(url: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for offer_id, email in await _fetch(url, PENDING_OFFERS):
        found.setdefault(email, set()).add(str(offer_id))
    return found


async def _offer_statuses(url: str, offer_ids: set[str]) -> set[str]:
    rows = await _fetch(url, "SELECT id, status FROM routing_offers")
    return {status for offer_id, status in rows if str(offer_id) in offer_ids}


async def _count(url: str, sql: str, **params: Any) -> int:
    return int((await _fetch(url, sql, **params))[0][0])


OWNED_BY_SIMULATED = """
SELECT count(*) FROM routing_work_items i JOIN routing_agents a ON a.id = i.owner_agent_id
WHERE i.state = 'assigned' AND a.email != :human
"""


async def test_a_tick_brings_a_lead_and_operators_accept_and_work_later(
    demo_url: str, clock: ManualClock
) -> None:
    database = Database(demo_url)
    floor = DemoFloor(database, SIMULATED_EMAILS, rng=random.Random(7), decline_share=0.0)
    try:
        leads_before = await _count(demo_url, "SELECT count(*) FROM leads_leads")

        first = await floor.step()

        assert first.leads_created == 1
        assert await _count(demo_url, "SELECT count(*) FROM leads_leads") == leads_before + 1
        created_by = await _fetch(
            demo_url, "SELECT actor_label FROM leads_activities WHERE kind = 'created' "
            "ORDER BY id DESC LIMIT 1",
        )  # fmt: skip
        assert created_by == [("demo-floor",)]
        assert (first.accepted, first.declined, first.moved) == (0, 0, 0)  # they take a moment
        pending = await _pending_by_email(demo_url)
        simulated = set().union(*(pending.get(email, set()) for email in SIMULATED_EMAILS))
        human = pending.get(HUMAN_OPERATOR_EMAIL, set())
        assert simulated
        owned = await _count(demo_url, OWNED_BY_SIMULATED, human=HUMAN_OPERATOR_EMAIL)

        clock.advance(31)  # past the longest answer delay, inside the 60 s offer timeout
        second = await floor.step()

        assert second.accepted == len(simulated)
        assert await _offer_statuses(demo_url, simulated) == {"accepted"}
        # The new lead went to the human, the least loaded; their offers are theirs to answer.
        assert await _offer_statuses(demo_url, human) == {"pending"}
        assert second.moved == owned
        worked_by = await _fetch(
            demo_url,
            "SELECT DISTINCT actor_label FROM leads_activities WHERE kind = 'status_changed' "
            "AND actor_label LIKE '%(demo-floor)'",
        )
        assert {label for (label,) in worked_by} <= {f"{e} (demo-floor)" for e in SIMULATED_EMAILS}
        assert worked_by
    finally:
        await database.dispose()


async def test_declined_offers_go_to_someone_else(demo_url: str, clock: ManualClock) -> None:
    database = Database(demo_url)
    floor = DemoFloor(database, SIMULATED_EMAILS, rng=random.Random(3), decline_share=1.0)
    try:
        await floor.step()
        pending = await _pending_by_email(demo_url)
        simulated = set().union(*(pending.get(email, set()) for email in SIMULATED_EMAILS))

        clock.advance(31)
        report = await floor.step()

        assert report.declined == len(simulated) > 0
        assert report.accepted == 0
        assert await _offer_statuses(demo_url, simulated) == {"declined"}
    finally:
        await database.dispose()


async def test_no_new_leads_past_the_limit_or_with_a_long_backlog(
    demo_url: str, clock: ManualClock
) -> None:
    database = Database(demo_url)
    capped = DemoFloor(database, SIMULATED_EMAILS, max_leads=1)
    swamped = DemoFloor(database, SIMULATED_EMAILS, max_backlog=-1)
    try:
        assert (await capped.step()).leads_created == 1
        clock.advance(10)
        assert (await capped.step()).leads_created == 0
        assert (await swamped.step()).leads_created == 0
    finally:
        await database.dispose()


async def test_the_floor_survives_a_failing_database_and_stops_cleanly(tmp_path: Path) -> None:
    broken = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'allot.sqlite3'}")
    floor = DemoFloor(broken, SIMULATED_EMAILS, tick_seconds=0.01)
    try:
        floor.start()
        await asyncio.sleep(0.1)  # several ticks, each failing
        assert floor.running

        await floor.stop()

        assert not floor.running
    finally:
        await broken.dispose()


async def test_the_floor_runs_while_the_app_serves(demo_url: str, tmp_path: Path) -> None:
    settings = Settings(environment="test", data_dir=tmp_path / "var", log_level="WARNING")
    app = create_app(settings, run_background=False)
    floor = install_floor(app, DemoFloor(app.state.database, SIMULATED_EMAILS, tick_seconds=0.01))
    leads_before = await _count(demo_url, "SELECT count(*) FROM leads_leads")

    async with app.router.lifespan_context(app):
        assert floor.running
        for _ in range(100):
            if floor.leads_created:
                break
            await asyncio.sleep(0.02)

    assert not floor.running
    assert floor.leads_created >= 1
    assert await _count(demo_url, "SELECT count(*) FROM leads_leads") >= leads_before + 1
