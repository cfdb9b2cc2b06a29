"""What the simulator stands on and how it is used: the agents' timeline rows, a seed giving one
answer, `allot routing simulate` and the managers' page."""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from allot.contexts.identity import passwords
from allot.contexts.routing import agent_service
from allot.contexts.routing.models import AgentTimelineEntry
from allot.contexts.routing.schemas import AgentUpdate, LeaveCreate
from allot.contexts.routing.simulation_history import load_history, rules_from_json
from allot.contexts.routing.simulation_report import build
from allot.contexts.routing.simulator import Simulation
from allot.kernel.clock import ManualClock, set_clock
from allot.kernel.db import Database
from tests.cli.conftest import Invoke, cli, sqlite_url  # noqa: F401 (fixtures)
from tests.factories import csrf_token, login, make_user

from .helpers import make_agent, make_queue
from .test_simulator import SENIORS_RULES, World, offer_history, two_queue_history

HTML = {"Accept": "text/html", "Accept-Language": "en"}


@pytest.fixture(autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    previous = passwords.use_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield
    passwords.use_hasher(previous)


async def timeline(database: Database, agent_id) -> list[AgentTimelineEntry]:
    async with database.reader() as session:
        rows = await session.execute(
            select(AgentTimelineEntry)
            .where(AgentTimelineEntry.agent_id == agent_id)
            .order_by(AgentTimelineEntry.at, AgentTimelineEntry.id)
        )
        return list(rows.scalars())


async def test_every_availability_or_capacity_change_is_on_the_agents_timeline(database, clock):
    await make_queue(database)
    anna = await make_agent(database, capacity=2, daily_quota=5, skills=["loans", "ru"])
    [created] = await timeline(database, anna.id)
    assert (created.change, created.at, created.status, created.capacity) == (
        "created", clock.now(), "available", 2,
    )  # fmt: skip
    assert (created.is_active, created.on_leave, created.off_shift) == (True, False, False)
    assert (created.daily_quota, created.attributes["skills"]) == (5, ["loans", "ru"])
    clock.advance(10)
    async with database.transaction() as session:
        await agent_service.set_status(session, anna.id, "away")
        await agent_service.set_status(session, anna.id, "away")  # no change: no row
    clock.advance(10)
    async with database.transaction() as session:
        await agent_service.update_agent(session, anna.id, AgentUpdate(capacity=4, weight=2))
    clock.advance(10)
    async with database.transaction() as session:
        today = clock.now().date()
        await agent_service.add_leave(
            session, anna.id, LeaveCreate(starts_on=today, ends_on=today, reason="ill")
        )
    rows = await timeline(database, anna.id)
    assert [(r.change, r.status, r.capacity, r.weight, r.on_leave) for r in rows] == [
        ("created", "available", 2, 1.0, False),
        ("status", "away", 2, 1.0, False),
        ("updated", "away", 4, 2.0, False),
        ("leave", "away", 4, 2.0, True),
    ]
    assert [(r.at - created.at).total_seconds() for r in rows] == [0, 10, 20, 30]


async def test_the_same_seed_gives_the_same_report(database, clock):
    """Under rules that send everything to the broadcast queue, agents get offers they never
    had: their answers are drawn from what each really answered, with the seed."""
    world = World(database, clock)
    await offer_history(world)
    everything_to_team = {"filters": [{"name": "all", "when": "", "queue": "Team"}]}
    async with database.reader() as session:
        rules = await rules_from_json(session, json.dumps(everything_to_team))
        loaded = await load_history(session, start=world.t(0), end=world.t(600), rules=rules)
    reports = []
    for seed in (7, 7, 8):
        simulation = Simulation(loaded.history, seed)
        outcome = simulation.run()
        reports.append(json.dumps(build(loaded, outcome, seed).as_dict(), sort_keys=True))
        assert simulation.rng.getstate() != random.Random(seed).getstate()  # draws were made
    assert reports[0] == reports[1]
    assert json.loads(reports[0])["seed"] == 7
    assert json.loads(reports[2])["seed"] == 8


def test_the_command_prints_the_predicted_change(
    cli: Invoke,  # noqa: F811
    sqlite_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert cli("migrate").exit_code == 0
    manual = ManualClock()
    previous = set_clock(manual)

    async def history() -> dict:
        database = Database(sqlite_url)
        try:
            return await two_queue_history(World(database, manual))
        finally:
            await database.dispose()

    try:
        made = asyncio.run(history())
    finally:
        set_clock(previous)
    day = manual.now().date().isoformat()  # 12:00 in Moscow: the same business day
    rules = tmp_path / "seniors.json"
    rules.write_text(json.dumps({"definition": SENIORS_RULES}), encoding="utf-8")
    result = cli("routing", "simulate", "--rules", str(rules), "--from", day, "--to", day,
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    changes = {row["name"]: row["change"] for row in report["agents"]}
    assert changes["Vera"] == 6
    assert changes["Anna"] + changes["Boris"] == -6
    assert report["recorded"]["assignments"] == report["simulated"]["assignments"] == 12
    vera = str(made["vera"].id)
    assert sum(1 for pair in report["items"].values() if pair["simulated"] == vera) == 6

    table = cli("routing", "simulate", "--rules", str(rules), "--from", day, "--to", day)
    assert table.exit_code == 0, table.output
    assert "Vera\t0\t6\t+6" in table.output
    changed = re.search(r"Items with another owner: (\d+) of 12", table.output)
    assert changed
    assert int(changed.group(1)) >= 6
    recorded = cli("routing", "simulate", "--from", day, "--to", day, "--json")
    assert json.loads(recorded.output)["changed_items"] == 0  # the rules that applied
    assert cli("routing", "simulate", "--rules", str(rules), "--rule-set", "1", "--from", day,
               "--to", day).exit_code == 1  # fmt: skip
    bad = cli("routing", "simulate", "--from", day, "--to", "2020-01-01")
    assert bad.exit_code == 1
    assert "ends before it starts" in bad.output


async def test_a_manager_sees_the_predicted_change_on_the_page(database, clock, client):
    world = World(database, clock)
    made = await two_queue_history(world)
    manager = await make_user(database, roles=("manager",), locale="en")
    assert (await login(client, manager.email)).status_code == 303
    page = await client.get("/routing/simulate", headers=HTML)
    assert page.status_code == 200
    assert 'name="rules_json"' in page.text
    assert "As recorded" in page.text
    day = clock.now().date().isoformat()
    token = await csrf_token(client, "/routing/simulate")
    form = {"csrf_token": token, "rule_set": "", "date_from": day, "date_to": day, "seed": "0"}
    response = await client.post(
        "/routing/simulate", data={**form, "rules_json": json.dumps(SENIORS_RULES)}, headers=HTML
    )
    assert response.status_code == 200, response.text
    assert f'data-agent="{made["vera"].id}" data-change="6"' in response.text
    assert "<mark>+6</mark>" in response.text
    assert re.search(r"another owner: ([6-9]|1[0-2]) of 12", html.unescape(response.text))

    unknown_queue = {"filters": [{"name": "x", "when": "", "queue": "Mars"}]}
    refused = await client.post(
        "/routing/simulate", data={**form, "rules_json": json.dumps(unknown_queue)}, headers=HTML
    )
    assert refused.status_code == 422
    assert "filters.0.queue: No active queue named" in html.unescape(refused.text)
    assert "Mars" in refused.text  # the pasted text is kept
    backwards = await client.post(
        "/routing/simulate", data={**form, "date_to": str(date(2020, 1, 1))}, headers=HTML
    )
    assert backwards.status_code == 422
    assert "ends before it starts" in backwards.text


async def test_the_page_is_for_managers(database, clock, client):
    operator = await make_user(database, roles=("operator",), locale="en")
    assert (await login(client, operator.email)).status_code == 303
    assert (await client.get("/routing/simulate", headers=HTML)).status_code == 403
