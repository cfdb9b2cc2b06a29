"""Fair share (routing/fairness.py): the issue's property over the real engine (the report, its
JSON API, the /metrics gauges and the board: test_fairness_report.py).

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
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from allot.contexts import routing
from allot.contexts.routing import fairness
from allot.contexts.routing.models import WorkItem
from allot.kernel.db.base import Base
from allot.kernel.db.engine import Database

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
