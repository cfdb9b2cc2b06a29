"""Fair share (routing/fairness.py): the issue's property over the real engine, the report, its
JSON API, the /metrics gauges and the board.

The property (issue 4): over any window of 10x the pool size, an equally weighted eligible
agent's share stays within ±10% of the mean. Read exactly as tested here:
- a window is W = 10 x N consecutive assignments (N agents of equal weight and capacity), in
  the order the engine made them; the mean is W / N = 10, so ±10% is 9 to 11 each;
- "eligible" is taken literally: a window counts when every agent could take the item at every
  assignment in it (no agent at capacity; all are available). A window with a full agent says
  nothing about the strategy: a full agent cannot be given work, and whoever frees capacity
  first takes the waiting items (the backlog pass), by design;
- the sequence and the eligibility are observed independently of the decision log and of
  fairness.py: from the items' owners after each step and loads counted by the test.

Hypothesis checks the property for every count-fair situation (SQLite and PostgreSQL). One
situation is not count-fair by design, and a test says so: least_loaded and most_available
equalise open load, so the agent whose work is completed first gets the next item. Two
counterexamples found here (longest_idle among busy agents, round robin after a batch) were
engine bugs; they are fixed and kept as regression tests.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from allot.contexts import routing
from allot.contexts.routing import agent_service, fairness, fairness_metrics
from allot.contexts.routing import service as routing_service
from allot.contexts.routing.models import WorkItem
from allot.contexts.routing.schemas import AgentUpdate, LeaveCreate
from allot.kernel.db.base import Base
from allot.kernel.db.engine import Database
from tests.conftest import count_queries
from tests.factories import auth_headers, login, make_user

from .helpers import make_agent, make_queue, set_status

_refs = itertools.count(1)


# -- an engine history observed from outside ---------------------------------------------------
@dataclass
class Pick:
    agent_id: uuid.UUID
    all_eligible: bool  # every agent had room (load < capacity) when this assignment was made


@dataclass
class History:
    """Drives the real engine (submit, submit_many, complete) and records each assignment from
    the items' owners, in the order the engine made them, with the loads the test counts."""

    database: Database
    queue_id: uuid.UUID
    agents: list[uuid.UUID]
    capacity: int
    picks: list[Pick] = field(default_factory=list)
    op_ends: list[int] = field(default_factory=lambda: [0])  # len(picks) after each step
    owners: dict[str, uuid.UUID] = field(default_factory=dict)  # every item ever assigned
    loads: Counter[uuid.UUID] = field(default_factory=Counter)
    closed: set[str] = field(default_factory=set)

    async def submit(self, count: int = 1, *, batch: bool = False) -> None:
        references = [f"fair:{next(_refs):08d}" for _ in range(count)]
        async with self.database.transaction() as session:
            if batch:
                await routing.submit_many(
                    session, [routing.NewItem(reference=r, kind="lead") for r in references]
                )
            else:
                for reference in references:
                    await routing.submit(session, reference=reference, kind="lead")
        await self._observe(released=None)

    def open_items(self, agent_id: uuid.UUID | None = None) -> list[str]:
        return sorted(
            r
            for r, owner in self.owners.items()
            if r not in self.closed and agent_id in (None, owner)
        )

    async def complete(self, choice: int) -> None:
        """Complete one of the open items (the choice-th, modulo their number)."""
        open_items = self.open_items()
        if open_items:
            await self.complete_reference(open_items[choice % len(open_items)])

    async def complete_reference(self, reference: str) -> None:
        async with self.database.transaction() as session:
            assert await routing.complete(session, reference)
        self.closed.add(reference)
        await self._observe(released=self.owners[reference])

    async def _observe(self, released: uuid.UUID | None) -> None:
        async with self.database.reader() as session:
            rows = (
                await session.execute(
                    select(WorkItem.reference, WorkItem.owner_agent_id, WorkItem.state).where(
                        WorkItem.owner_agent_id.is_not(None)
                    )
                )
            ).all()
        if released is not None:
            self.loads[released] -= 1
        # Within one step the engine places items in the order they came (a batch plans them in
        # its given order; a backlog pass serves one agent), so the references' order is the
        # order of the assignments.
        for reference, owner, _state in sorted(r for r in rows if r[0] not in self.owners):
            room = all(self.loads[a] < self.capacity for a in self.agents)
            self.picks.append(Pick(owner, room))
            self.loads[owner] += 1
            self.owners[reference] = owner
        engine_loads = Counter(owner for _r, owner, state in rows if state == "assigned")
        assert self.loads == engine_loads, "the test's loads and the engine's disagree"
        self.op_ends.append(len(self.picks))


def unfair_windows(picks: list[Pick], agents: list[uuid.UUID]) -> tuple[int, list[str]]:
    """(windows checked, the violations): every window of 10 x N assignments in which every
    agent had room throughout, where some agent got more or less than the mean ±10%."""
    size = 10 * len(agents)
    mean = size / len(agents)
    checked, violations = 0, []
    for start in range(len(picks) - size + 1):
        window = picks[start : start + size]
        if not all(p.all_eligible for p in window):
            continue
        checked += 1
        counts = Counter(p.agent_id for p in window)
        for position, agent_id in enumerate(agents):
            if abs(counts[agent_id] - mean) > 0.1 * mean + 1e-9:
                violations.append(f"assignments {start}..{start + size - 1}: agent {position} "
                                  f"got {counts[agent_id]} of {size} (mean {mean:g})")  # fmt: skip
    return checked, violations


async def reset(database: Database) -> None:
    """Empty routing's tables and the event/timer plumbing between Hypothesis examples."""
    names = [t for t in reversed(Base.metadata.sorted_tables) if t.name.startswith("routing_")]
    names += [Base.metadata.tables[n] for n in ("kernel_outbox", "kernel_inbox", "kernel_timers")]
    async with database.transaction() as session:
        for table in names:
            await session.execute(delete(table))


async def pool(database: Database, strategy: str, size: int, capacity: int) -> History:
    queue = await make_queue(database, name="Fair", strategy=strategy)
    agents = [(await make_agent(database, capacity=capacity)).id for _ in range(size)]
    return History(database, queue.id, agents, capacity)


async def check_report_against_history(database: Database, history: History) -> None:
    """fairness.py's windows equal the test's own counts, for windows ending at step ends."""
    async with database.reader() as session:
        queue_id = history.queue_id
        default = await fairness.fairness_report(session, queue_id)
        assert default is not None
        assert default.window == 10 * len(history.agents)
        sizes = {len(history.picks) - end for end in history.op_ends[-6:]} | {
            len(history.picks) + 3
        }
        for size in sorted(s for s in sizes if s > 0):
            report = await fairness.fairness_report(session, queue_id, window=size)
            assert report is not None
            expected = Counter(p.agent_id for p in history.picks[-size:])
            assert report.assignments == min(size, len(history.picks))
            assert {a.agent_id: a.assignments for a in report.agents} == {
                a: expected[a] for a in history.agents
            }
            for share in report.agents:
                assert share.expected == pytest.approx(1 / len(history.agents))
                assert share.share == pytest.approx(expected[share.agent_id] / report.assignments)


# -- the property --------------------------------------------------------------------------------
PROPERTY_SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def run_and_check(database, clock, strategy: str, size: int, capacity: int, steps) -> None:
    await reset(database)
    history = await pool(database, strategy, size, capacity)
    for kind, value in steps:
        clock.advance(1)  # real time moves between requests; ties on the clock are not the test
        if kind == "complete":
            await history.complete(value)
        else:
            await history.submit(value, batch=kind == "batch")
    checked, violations = unfair_windows(history.picks, history.agents)
    event(f"windows checked: {'0' if not checked else '1-19' if checked < 20 else '20+'}")
    assert not violations, f"{strategy}: " + "; ".join(violations[:5])
    if history.picks:
        await check_report_against_history(database, history)


@st.composite
def with_completions(draw):
    """Round robin, one item at a time, items completed at random (about one step in two)."""
    size = draw(st.integers(2, 8))
    capacity = draw(st.sampled_from([2, 3, 5, 1000, 1000]))
    step = st.one_of(
        st.tuples(st.just("submit"), st.just(1)),
        st.tuples(st.just("complete"), st.integers(0, 10**6)),
    )
    count = 2 * (12 * size + 5)  # about 12 x N assignments: some windows of 10 x N
    return size, capacity, draw(st.lists(step, min_size=count, max_size=count + 10))


@PROPERTY_SETTINGS
@given(scenario=with_completions())
async def test_round_robin_gives_each_agent_its_share_while_items_complete_at_random(
    database, clock, scenario
):
    size, capacity, steps = scenario
    await run_and_check(database, clock, "round_robin", size, capacity, steps)


@st.composite
def arrivals_only(draw):
    """Items arriving one by one or in batches (submit_many), none completed."""
    strategy, batches = draw(
        st.sampled_from(
            [("round_robin", False), ("round_robin", True), ("least_loaded", False),
             ("least_loaded", True), ("most_available", False), ("most_available", True),
             ("longest_idle", False), ("longest_idle", True)]
        )
    )  # fmt: skip
    size = draw(st.integers(2, 8))
    arrive = st.tuples(st.just("batch"), st.integers(1, 6)) if batches else st.just(("submit", 1))
    count = (12 * size + 5) // (3 if batches else 1)
    return strategy, size, draw(st.lists(arrive, min_size=count, max_size=count + 10))


@PROPERTY_SETTINGS
@given(scenario=arrivals_only())
async def test_each_strategy_gives_each_agent_its_share_of_arrivals(database, clock, scenario):
    strategy, size, steps = scenario
    await run_and_check(database, clock, strategy, size, 1000, steps)


# -- weighted shares -----------------------------------------------------------------------------
def weighted_violations(
    picks: list[Pick], agents: list[uuid.UUID], weights: list[int]
) -> tuple[int, list[str]]:
    """Like `unfair_windows`, against weights: in every window of 10 x N assignments in which
    every agent had room throughout, agent i gets W x w_i / sum(w) ± 10%. When that expectation
    is not a whole number (weights 1 and 1 and 3: 50 x 1/5 is whole, 20 x 1/3 is not) no
    sequence of whole assignments can keep every window within 10% of it, so the bound there is
    1.5 assignments (what a weighted rotation reaches, docs/routing-fairness.md)."""
    size, total = 10 * len(agents), sum(weights)
    checked, violations = 0, []
    for start in range(len(picks) - size + 1):
        window = picks[start : start + size]
        if not all(p.all_eligible for p in window):
            continue
        checked += 1
        counts = Counter(p.agent_id for p in window)
        for position, (agent_id, weight) in enumerate(zip(agents, weights, strict=True)):
            expected = size * weight / total
            slack = 0.1 * expected if (size * weight) % total == 0 else max(0.1 * expected, 1.5)
            if abs(counts[agent_id] - expected) > slack + 1e-9:
                violations.append(f"assignments {start}..{start + size - 1}: agent {position} "
                                  f"(weight {weight}) got {counts[agent_id]} of {size}, "
                                  f"expected {expected:.2f}")  # fmt: skip
    return checked, violations


async def weighted_pool(database: Database, strategy: str, weights: list[int], capacity: int):
    queue = await make_queue(database, name="Weighted fair", strategy=strategy)
    agents = [(await make_agent(database, capacity=capacity, weight=w)).id for w in weights]
    return History(database, queue.id, agents, capacity)


async def run_weighted(database, clock, strategy, weights, capacity, steps) -> None:
    await reset(database)
    history = await weighted_pool(database, strategy, weights, capacity)
    for kind, value in steps:
        clock.advance(1)
        if kind == "complete":
            await history.complete(value)
        else:
            await history.submit(value, batch=kind == "batch")
    checked, violations = weighted_violations(history.picks, history.agents, weights)
    event(f"windows checked: {'0' if not checked else '1-19' if checked < 20 else '20+'}")
    assert not violations, f"{strategy} {weights}: " + "; ".join(violations[:5])


@st.composite
def weighted_with_completions(draw):
    """Round robin over agents of weight 1 to 3, items completed at random."""
    weights = draw(st.lists(st.integers(1, 3), min_size=2, max_size=5))
    capacity = draw(st.sampled_from([3, 5, 1000]))
    step = st.one_of(
        st.tuples(st.just("submit"), st.just(1)),
        st.tuples(st.just("complete"), st.integers(0, 10**6)),
    )
    count = 2 * (12 * len(weights) + 5)
    return weights, capacity, draw(st.lists(step, min_size=count, max_size=count + 10))


@PROPERTY_SETTINGS
@given(scenario=weighted_with_completions())
async def test_weighted_round_robin_gives_each_agent_its_weights_share(database, clock, scenario):
    weights, capacity, steps = scenario
    await run_weighted(database, clock, "round_robin", weights, capacity, steps)


@st.composite
def weighted_arrivals(draw):
    """Round robin and least loaded (load for the weight), items one by one or in batches."""
    strategy = draw(st.sampled_from(["round_robin", "least_loaded"]))
    batches = draw(st.booleans())
    weights = draw(st.lists(st.integers(1, 3), min_size=2, max_size=5))
    arrive = st.tuples(st.just("batch"), st.integers(1, 6)) if batches else st.just(("submit", 1))
    count = (12 * len(weights) + 5) // (3 if batches else 1)
    return strategy, weights, draw(st.lists(arrive, min_size=count, max_size=count + 10))


@PROPERTY_SETTINGS
@given(scenario=weighted_arrivals())
async def test_weights_steer_the_share_of_arrivals(database, clock, scenario):
    strategy, weights, steps = scenario
    await run_weighted(database, clock, strategy, weights, 1000, steps)


@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded"])
async def test_weight_two_gets_twice_the_items_of_weight_one(database, clock, strategy):
    """The plain case, counted by hand: weights 2 and 1, 30 items one by one -> 20 and 10, and
    every window of 20 holds 13 or 14 for the heavier (20 x 2/3 = 13.3)."""
    history = await weighted_pool(database, strategy, [2, 1], capacity=1000)
    for _ in range(30):
        clock.advance(1)
        await history.submit()
    counts = Counter(p.agent_id for p in history.picks)
    assert [counts[a] for a in history.agents] == [20, 10]
    heavy = history.agents[0]
    for start in range(len(history.picks) - 20 + 1):
        window = Counter(p.agent_id for p in history.picks[start : start + 20])
        assert window[heavy] in (13, 14)


async def test_an_agent_back_from_away_gets_no_burst(database, clock):
    """Round robin: an agent away while others took 20 items starts at the lowest turn of the
    queue when it comes back, so it takes its turn, not the 10 it missed."""
    history = await weighted_pool(database, "round_robin", [1, 1, 1], capacity=1000)
    late = history.agents[2]
    await set_status(database, late, "away")
    for _ in range(20):
        clock.advance(1)
        await history.submit()
    await set_status(database, late, "available")
    before = len(history.picks)
    for _ in range(6):
        clock.advance(1)
        await history.submit()
    after = Counter(p.agent_id for p in history.picks[before:])
    assert after == dict.fromkeys(history.agents, 2)


# -- load-fair, not count-fair, by design; and two regressions ------------------------------------
@pytest.mark.parametrize("strategy", ["least_loaded", "most_available"])
async def test_least_loaded_gives_more_to_whoever_completes_first(database, clock, strategy):
    """By design, not a fairness bug: least_loaded and most_available equalise open load, not
    assignments. Two agents with room to spare; the first one's items are completed as they come
    in. It is always the least loaded, so it gets (nearly) every new item — a faster agent gets
    more work. Managers who want equal counts choose round robin (docs/routing-fairness.md)."""
    history = await pool(database, strategy, 2, capacity=50)
    await history.submit(2)  # one each
    fast = history.picks[0].agent_id
    for _ in range(20):
        clock.advance(1)
        await history.complete_reference(history.open_items(fast)[0])
        clock.advance(1)
        await history.submit()
    checked, violations = unfair_windows(history.picks, history.agents)
    assert checked
    assert violations
    later = Counter(p.agent_id for p in history.picks[2:])
    assert later[fast] >= 19


async def test_longest_idle_takes_turns_among_busy_agents(database, clock):
    """Regression: busy agents all have the same idle_since, and longest_idle once ordered them
    by the tie draw alone, so the agent just assigned drew again and took long runs (40 runs of
    40 broke the property). They are now ordered by least recently assigned first."""
    for _run in range(2):
        await reset(database)
        history = await pool(database, "longest_idle", 2, capacity=1000)
        for _ in range(60):
            clock.advance(1)
            await history.submit()
        checked, violations = unfair_windows(history.picks, history.agents)
        assert checked
        assert not violations, violations[:3]


async def test_round_robin_keeps_its_turn_after_a_batch(database, clock):
    """Regression: a batch (submit_many) once stored one last_assigned_at for every agent it
    chose, so the rotation order inside the batch was lost and the next pick fell to the tie
    draw (38 runs of 40 broke the property). Each agent now keeps the time of its own last pick
    in the batch. Two agents: a batch of two (one each), then one item alone, 30 times."""
    for _run in range(4):
        await reset(database)
        history = await pool(database, "round_robin", 2, capacity=1000)
        for _ in range(30):
            clock.advance(1)
            await history.submit(2, batch=True)
            clock.advance(1)
            await history.submit()
        checked, violations = unfair_windows(history.picks, history.agents)
        assert checked
        assert not violations, violations[:3]


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
