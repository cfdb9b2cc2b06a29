"""Fair share (routing/fairness.py) as the managers read it: the report over a queue's recent
assignments, its JSON API, the /metrics gauges and the board (the property over the engine
itself is tests/contexts/routing/test_fairness.py)."""

from __future__ import annotations

import itertools
import re
import uuid
from collections import Counter

import pytest
from sqlalchemy import select

from allot.contexts import routing
from allot.contexts.routing import agent_service, fairness, fairness_metrics
from allot.contexts.routing import service as routing_service
from allot.contexts.routing.models import WorkItem
from allot.contexts.routing.schemas import AgentUpdate, LeaveCreate
from allot.kernel.db.engine import Database
from tests.conftest import count_queries
from tests.factories import auth_headers, login, make_user

from .helpers import make_agent, make_queue

_refs = itertools.count(1)


# -- the report --------------------------------------------------------------------------------
async def weighted_history(database: Database, clock) -> dict:
    """Round robin over Anna (weight 1), Boris (2), Vera (3) and Gleb (1): 8 items, then Gleb
    goes on leave, then 6 more; Dina is deactivated before anything. Another queue, in offer
    mode, has one accepted offer and one still pending. Returns the ids and the counts of the
    Weighted queue's assignments, taken from the items' owners (not from the decision log)."""
    weighted = await make_queue(
        database, name="Weighted", strategy="round_robin", member_expression='"w" in skills'
    )
    offers = await make_queue(
        database, name="Offers", offer_mode="offer", member_expression='"o" in skills'
    )
    ids = {
        name: (await make_agent(database, name=name, capacity=100, skills=["w"], weight=w)).id
        for name, w in (("Anna", 1), ("Boris", 2), ("Vera", 3), ("Gleb", 1), ("Dina", 1))
    }
    ids["Fedor"] = (await make_agent(database, name="Fedor", capacity=5, skills=["o"])).id
    async with database.transaction() as session:
        await agent_service.update_agent(session, ids["Dina"], AgentUpdate(is_active=False))

    async def submit_to(queue_id: uuid.UUID, count: int) -> list[routing.SubmitResult]:
        results = []
        for _ in range(count):
            clock.advance(1)
            async with database.transaction() as session:
                results.append(
                    await routing.submit(
                        session, reference=f"w:{next(_refs)}", kind="lead", queue_id=queue_id
                    )
                )
        return results

    await submit_to(weighted.id, 8)
    clock.advance(1)
    async with database.transaction() as session:
        today = clock.now().date()
        await agent_service.add_leave(
            session, ids["Gleb"], LeaveCreate(starts_on=today, ends_on=today)
        )
    last_six = await submit_to(weighted.id, 6)
    offered = await submit_to(offers.id, 2)  # the first is accepted, the second stays offered
    async with database.transaction() as session:
        await routing_service.accept_offer(session, offered[0].offer_ids[0], ids["Fedor"])
    async with database.reader() as session:
        owners = (
            await session.scalars(
                select(WorkItem.owner_agent_id).where(WorkItem.queue_id == weighted.id)
            )
        ).all()
    return {
        "weighted": weighted.id,
        "offers": offers.id,
        "ids": ids,
        "counts": Counter(owners),
        "last_six": Counter(r.agent_id for r in last_six),
    }


async def test_the_report_measures_shares_against_weights_of_the_pool(database, clock):
    h = await weighted_history(database, clock)
    ids, counts = h["ids"], h["counts"]
    assert sum(counts.values()) == 14
    async with database.reader() as session:
        report = await fairness.fairness_report(session, h["weighted"])
        last_six = await fairness.fairness_report(session, h["weighted"], window=6)
        offers = await fairness.fairness_report(session, h["offers"])
        assert await fairness.fairness_report(session, uuid.uuid4()) is None
    assert report is not None
    assert last_six is not None
    assert offers is not None
    # The pool is Anna, Boris and Vera (Gleb is on leave, Dina inactive): W = 10 x 3.
    assert (report.window, report.assignments, report.pool_size) == (30, 14, 3)
    assert not report.full
    shares = {s.name: s for s in report.agents}
    assert list(shares) == ["Anna", "Boris", "Vera", "Gleb"]  # the pool by name, then the rest
    for name, weight in (("Anna", 1), ("Boris", 2), ("Vera", 3)):
        share = shares[name]
        assert share.in_pool
        assert share.assignments == counts[ids[name]]
        assert share.share == pytest.approx(counts[ids[name]] / 14)
        assert share.expected == pytest.approx(weight / 6)
        assert share.deviation == pytest.approx((counts[ids[name]] / 14) / (weight / 6) - 1)
    gleb = shares["Gleb"]  # assignments before his leave still count, with no expectation
    assert (gleb.in_pool, gleb.assignments, gleb.expected, gleb.deviation) == (
        False, counts[ids["Gleb"]], None, None
    )  # fmt: skip
    worst = max((shares[n] for n in ("Anna", "Boris", "Vera")), key=lambda s: abs(s.deviation))
    assert report.worst_agent_id == worst.agent_id
    assert report.max_abs_deviation == pytest.approx(abs(worst.deviation))
    # Weighted round robin: after Gleb's leave, six items go 1 : 2 : 3 (one turn either way).
    for name, weight in (("Anna", 1), ("Boris", 2), ("Vera", 3)):
        assert abs(h["last_six"][ids[name]] - weight) <= 1, (name, h["last_six"])
    assert counts[ids["Vera"]] > counts[ids["Anna"]]
    # A window of 6: the items after Gleb's leave only.
    assert last_six.assignments == 6
    assert {s.agent_id: s.assignments for s in last_six.agents} == {
        ids[n]: h["last_six"][ids[n]] for n in ("Anna", "Boris", "Vera")
    }
    # Offers are not assignments; the accepted one is.
    assert offers.assignments == 1
    assert [(s.name, s.share, s.expected, s.deviation) for s in offers.agents] == [
        ("Fedor", 1.0, 1.0, 0.0)
    ]


async def test_an_empty_window_has_no_deviation(database, clock):
    queue = await make_queue(database, name="Quiet")
    await make_agent(database)
    async with database.reader() as session:
        report = await fairness.fairness_report(session, queue.id)
    assert report is not None
    assert (report.window, report.assignments, report.max_abs_deviation) == (10, 0, None)
    assert [(s.share, s.deviation) for s in report.agents] == [(0.0, None)]


# -- JSON API ----------------------------------------------------------------------------------
async def test_the_api_reports_a_queue_and_names_bad_parameters(client, database, clock):
    h = await weighted_history(database, clock)
    manager = await auth_headers(database, await make_user(database, roles=("manager",)))
    response = await client.get(
        "/api/v1/routing/fairness", params={"queue_id": str(h["weighted"])}, headers=manager
    )
    assert response.status_code == 200, response.text
    [queue] = response.json()["queues"]
    assert (queue["queue_name"], queue["window"], queue["assignments"]) == ("Weighted", 30, 14)
    deviations = {
        n: h["counts"][h["ids"][n]] / 14 / (w / 6) - 1
        for n, w in (("Anna", 1), ("Boris", 2), ("Vera", 3))
    }
    worst_name = max(deviations, key=lambda n: abs(deviations[n]))
    assert queue["worst_agent_id"] == str(h["ids"][worst_name])
    anna = next(a for a in queue["agents"] if a["name"] == "Anna")
    assert anna["assignments"] == h["counts"][h["ids"]["Anna"]]
    assert anna["expected"] == pytest.approx(1 / 6)

    every = await client.get("/api/v1/routing/fairness", params={"window": 6}, headers=manager)
    assert [(q["queue_name"], q["assignments"]) for q in every.json()["queues"]] == [
        ("Offers", 1), ("Weighted", 6)
    ]  # fmt: skip
    for params, field_name in (
        ({"queue_id": str(uuid.uuid4())}, "query.queue_id"),
        ({"window": 0}, "query.window"),
        ({"queue_id": "nope"}, "query.queue_id"),
    ):
        bad = await client.get("/api/v1/routing/fairness", params=params, headers=manager)
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in bad.json()["errors"]] == [field_name]
    operator = await auth_headers(database, await make_user(database, roles=("operator",)))
    assert (await client.get("/api/v1/routing/fairness", headers=operator)).status_code == 403

    spec = (await client.get("/api/v1/openapi.json")).json()
    operation = spec["paths"]["/api/v1/routing/fairness"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"queue_id", "window"}
    assert "application/problem+json" in operation["responses"]["422"]["content"]


# -- /metrics ----------------------------------------------------------------------------------
GAUGE = re.compile(r"^(allot_routing_fair_share\w*)\{(.*)\} (\S+)$")


async def scrape(client) -> dict[tuple[str, str, str | None], float]:
    """The fair-share samples of /metrics: (name, queue, agent or None) -> value."""
    text = (await client.get("/metrics")).text
    found = {}
    for line in text.splitlines():
        match = GAUGE.match(line)
        if match:
            name, labels, value = match.groups()
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            found[(name, pairs["queue"], pairs.get("agent"))] = float(value)
    return found


async def test_metrics_export_the_fair_share_refreshed_at_most_every_interval(
    client, database, clock
):
    h = await weighted_history(database, clock)
    collector = fairness_metrics.COLLECTOR
    await scrape(client)  # the first scrape starts a refresh in the background
    assert collector.task is not None
    await collector.task
    gauges = await scrape(client)
    anna, vera = str(h["ids"]["Anna"]), str(h["ids"]["Vera"])
    share = h["counts"][h["ids"]["Anna"]] / 14
    assert gauges[("allot_routing_fair_share", "Weighted", anna)] == pytest.approx(share)
    assert gauges[("allot_routing_fair_share_expected", "Weighted", anna)] == pytest.approx(1 / 6)
    assert gauges[("allot_routing_fair_share_deviation", "Weighted", anna)] == pytest.approx(
        share * 6 - 1
    )
    assert gauges[("allot_routing_fair_share_window_assignments", "Weighted", None)] == 14
    gleb = str(h["ids"]["Gleb"])  # outside the pool: a share, no expectation, no deviation
    assert ("allot_routing_fair_share", "Weighted", gleb) in gauges
    assert ("allot_routing_fair_share_deviation", "Weighted", gleb) not in gauges

    # More work within the interval: scrapes keep the snapshot and read nothing.
    async with database.transaction() as session:
        await routing.submit(session, reference="w:late", kind="lead", queue_id=h["weighted"])
    clock.advance(fairness_metrics.REFRESH_SECONDS - 1)
    with count_queries(database) as counter:
        again = await scrape(client)
    assert not any("routing_decisions" in s for s in counter.statements)
    assert again[("allot_routing_fair_share_window_assignments", "Weighted", None)] == 14
    # After it, the next scrape refreshes (in the background) and the one after shows it.
    clock.advance(1)
    await scrape(client)
    assert collector.task is not None
    await collector.task
    after = await scrape(client)
    assert after[("allot_routing_fair_share_window_assignments", "Weighted", None)] == 15
    assert ("allot_routing_fair_share_deviation", "Weighted", vera) in after


# -- the board ---------------------------------------------------------------------------------
async def test_the_board_shows_each_queues_fair_share_and_marks_the_worst(client, database, clock):
    h = await weighted_history(database, clock)
    user = await make_user(database, roles=("manager",), locale="en")
    assert (await login(client, user.email)).status_code == 303
    html = (await client.get("/board", headers={"Accept": "text/html"})).text
    body = re.search(rf'<tbody data-fairness-queue-id="{h["weighted"]}">(.*?)</tbody>', html, re.S)
    assert body, "no fair-share rows for the Weighted queue"
    rows = dict(re.findall(r'<tr data-fairness-agent-id="([^"]+)"(.*?)</tr>', body.group(1), re.S))
    assert set(rows) == {str(h["ids"][n]) for n in ("Anna", "Boris", "Vera", "Gleb")}
    # The worst is the pool member whose share is furthest from weight / 6, counted here.
    pool_weights = {"Anna": 1, "Boris": 2, "Vera": 3}
    deviations = {n: h["counts"][h["ids"][n]] / 14 / (w / 6) - 1 for n, w in pool_weights.items()}
    worst_name = max(deviations, key=lambda n: abs(deviations[n]))
    worst = rows[str(h["ids"][worst_name])]
    assert worst.startswith(" data-worst>")
    assert "<mark" in worst
    assert not any(
        "data-worst" in row for agent, row in rows.items() if agent != str(h["ids"][worst_name])
    )
    share = h["counts"][h["ids"][worst_name]] / 14
    deviation = round(deviations[worst_name] * 100)
    assert f"{'+' if deviation > 0 else ''}{deviation}%" in worst
    assert f">{round(share * 100)}%<" in worst
    assert "assignments in the window: 14 of 30" in body.group(1)
    assert "not in the pool" in rows[str(h["ids"]["Gleb"])]
