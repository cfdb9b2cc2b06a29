"""The what-if simulator: a history made by the real engine (submissions one by one and in
batches, offers accepted, declined and left to time out, availability flips, completions,
reclaims, rules with time steps), replayed under the rules that made it, gives every item the
owner it really got; another rule set gives the change it should; a seed gives one answer."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

from sqlalchemy import func, select

from allot.contexts import routing
from allot.contexts.routing import agent_service, rule_service, service
from allot.contexts.routing.models import Offer, WorkItem
from allot.contexts.routing.rule_schemas import RuleSetCreate
from allot.contexts.routing.rules import RuleSetDefinition
from allot.contexts.routing.schemas import AgentUpdate
from allot.contexts.routing.simulation_history import RECORDED, rules_from_json
from allot.contexts.routing.simulation_report import Report, simulate_period
from allot.kernel.timers import Timer, TimerRunner

from .helpers import assert_invariants, make_agent, make_queue

_refs = itertools.count(1)


class World:
    """Drives the real engine through a scenario at chosen moments: every timer due on the
    way fires at its due time (as a runner polling continuously would), and agents who are
    not offline send heartbeats, so nobody drops out unless the scenario says so."""

    def __init__(self, database, clock) -> None:
        self.database, self.clock = database, clock
        self.start = clock.now()
        self.runner = TimerRunner(database)
        self.agents: list = []

    def t(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    async def at(self, seconds: float) -> None:
        target = self.t(seconds)
        assert target >= self.clock.now()
        while True:
            async with self.database.reader() as session:
                due = await session.scalar(
                    select(func.min(Timer.due_at)).where(
                        Timer.status == "pending", Timer.due_at <= target
                    )
                )
            if due is None:
                break
            self.clock.set(max(due, self.clock.now()))
            await self.runner.fire_due()
        self.clock.set(target)
        async with self.database.transaction() as session:
            for agent in self.agents:
                current = await agent_service.get_agent(session, agent.id)
                if current.status != "offline":
                    await agent_service.heartbeat(session, agent.id)

    async def agent(self, **fields):
        made = await make_agent(self.database, **fields)
        self.agents.append(made)
        return made

    async def submit(self, **fields) -> str:
        reference = f"sim:{next(_refs):05d}"
        async with self.database.transaction() as session:
            await service.submit(session, reference=reference, kind="lead", **fields)
        return reference

    async def batch(self, count: int, **fields) -> list[str]:
        references = [f"sim:{next(_refs):05d}" for _ in range(count)]
        async with self.database.transaction() as session:
            await routing.submit_many(
                session, [routing.NewItem(reference=r, kind="lead", **fields) for r in references]
            )
        return references

    async def complete(self, reference: str) -> None:
        async with self.database.transaction() as session:
            await service.complete(session, reference)

    async def cancel(self, reference: str) -> None:
        async with self.database.transaction() as session:
            await service.cancel(session, reference)

    async def respond(self, reference: str) -> None:
        async with self.database.transaction() as session:
            await service.record_first_response(session, reference)

    async def status(self, agent, status: str) -> None:
        async with self.database.transaction() as session:
            await agent_service.set_status(session, agent.id, status)

    async def update(self, agent, **fields) -> None:
        async with self.database.transaction() as session:
            await agent_service.update_agent(session, agent.id, AgentUpdate(**fields))

    async def pending_offers(self) -> list[Offer]:
        async with self.database.reader() as session:
            rows = await session.execute(
                select(Offer).where(Offer.status == "pending").order_by(Offer.created_at, Offer.id)
            )
            return list(rows.scalars())

    async def answer(self, offer: Offer, accept: bool) -> None:
        async with self.database.transaction() as session:
            if accept:
                await service.accept_offer(session, offer.id, offer.agent_id)
            else:
                await service.decline_offer(session, offer.id, offer.agent_id)

    async def rules(self, definition: dict, *, activate: bool = True):
        body = RuleSetCreate(
            name="rules", definition=RuleSetDefinition.model_validate(definition),
            activate=activate,
        )  # fmt: skip
        async with self.database.transaction() as session:
            return await rule_service.create_rule_set(session, body)

    async def simulate(self, start: float, end: float, rules=RECORDED, seed: int = 0) -> Report:
        async with self.database.reader() as session:
            return await simulate_period(
                session, start=self.t(start), end=self.t(end), rules=rules, seed=seed
            )

    async def owners(self) -> dict:
        async with self.database.reader() as session:
            rows = await session.execute(select(WorkItem.id, WorkItem.owner_agent_id))
            return dict(rows.all())


def assert_reproduced(report: Report) -> None:
    differing = {item: pair for item, pair in report.owners.items() if pair[0] != pair[1]}
    assert not differing, differing
    assert report.recorded.per_agent == report.simulated.per_agent
    assert report.recorded.waits == report.simulated.waits
    assert (report.recorded.sla_items, report.recorded.sla_breached) == (
        report.simulated.sla_items,
        report.simulated.sla_breached,
    )
    assert report.recorded.offers == report.simulated.offers
    assert report.recorded.expired == report.simulated.expired


async def direct_history(world: World) -> dict:
    """Direct assignment: single submissions and batches, completions, an agent away and back,
    a capacity change, an agent going offline whose work is reclaimed after the grace."""
    await make_queue(world.database, name="Loans", reclaim_grace_seconds=120)
    anna = await world.agent(name="Anna", capacity=2)
    await world.at(1)
    boris = await world.agent(name="Boris", capacity=2)
    await world.at(2)
    vera = await world.agent(name="Vera", capacity=1)
    refs = []
    for n in range(3):
        await world.at(10 + n)
        refs.append(await world.submit())
    await world.at(20)
    refs += await world.batch(4)
    await world.at(30)
    await world.status(boris, "away")
    await world.at(40)
    refs.append(await world.submit())
    await world.at(41)
    refs.append(await world.submit(priority=3))
    await world.at(50)
    await world.complete(refs[0])
    await world.at(60)
    await world.status(boris, "available")
    await world.at(70)
    await world.complete(refs[4])
    await world.at(80)
    await world.update(vera, capacity=3)
    await world.at(90)
    refs += await world.batch(3, priority=1)
    await world.at(100)
    refs.append(await world.submit())
    await world.at(110)
    await world.status(vera, "offline")
    await world.at(200)  # vera's work was reclaimed at 230? no: grace 120 -> at 230
    await world.at(240)
    await world.complete(refs[1])
    await world.at(250)
    await world.cancel(refs[-1])
    await world.at(260)
    refs.append(await world.submit())
    await world.at(300)
    await assert_invariants(world.database)
    return {"anna": anna, "boris": boris, "vera": vera, "refs": refs}


async def test_replaying_a_direct_history_gives_every_item_its_real_owner(database, clock):
    world = World(database, clock)
    await direct_history(world)
    whole = await world.simulate(0, 300)
    assert whole.recorded.assignments >= 8
    assert_reproduced(whole)
    # A period starting in the middle: the state at its start is rebuilt by the replay.
    assert_reproduced(await world.simulate(45, 300))
    # No rule set was active: trying "no rules" for the period is the live rule set too.
    assert_reproduced(await world.simulate(0, 300, rules=None))


OFFER_RULES = {
    "filters": [
        {"name": "vip", "when": "vip == true", "queue": "Vip"},
        {
            "name": "big",
            "when": "amount >= 1000",
            "queue": "Big",
            "steps": [{"after_seconds": 150, "queue": "Team", "notify": ["manager"]}],
            "ttl_seconds": 400,
        },
        {
            "name": "rest",
            "when": "",
            "queue": "Loans",
            "when_nobody_available": "fallback",
            "fallback_queue": "Team",
        },
    ],
    "ageing": {"every_seconds": 45, "raise_by": 1, "up_to": 3},
}


async def oldest_pending(world: World) -> Offer | None:
    pending = await world.pending_offers()
    return pending[0] if pending else None


async def offer_history(world: World) -> dict:
    """Offers one at a time and broadcast, accepted, declined and left to time out; an active
    rule set with a fallback, a time step that widens to a broadcast queue, ageing and a TTL;
    first responses and a missed one (reclaimed), an agent away and one offline (reclaimed)."""
    db = world.database
    await make_queue(db, name="Loans", first_response_seconds=100, reclaim_grace_seconds=60)
    await make_queue(db, name="Big", offer_mode="offer", offer_timeout_seconds=60,
                     member_expression='"big" in skills', strategy="round_robin")  # fmt: skip
    await make_queue(db, name="Team", offer_mode="broadcast", broadcast_size=2,
                     offer_timeout_seconds=60)  # fmt: skip
    await make_queue(db, name="Vip", offer_mode="offer", member_expression='"vip" in skills')
    anna = await world.agent(name="Anna", capacity=2, skills=["loans", "big"])
    await world.at(1)
    boris = await world.agent(name="Boris", capacity=2, skills=["loans", "big"])
    await world.at(2)
    vera = await world.agent(name="Vera", capacity=1, skills=["loans"])
    await world.at(3)
    gleb = await world.agent(name="Gleb", capacity=1, skills=["big"])
    await world.at(4)
    dina = await world.agent(name="Dina", capacity=5, skills=["vip"])
    await world.at(5)
    rule_set = await world.rules(OFFER_RULES)
    refs: list[str] = []

    async def answer(accept: bool) -> None:
        offer = await oldest_pending(world)
        if offer is not None:
            await world.answer(offer, accept)

    steps = [
        (10, lambda: world.submit(attributes={"amount": 2000})),
        (15, lambda: answer(False)),
        (20, lambda: answer(True)),
        (25, lambda: world.submit(attributes={"amount": 5000})),
        (30, lambda: world.batch(3, attributes={"amount": 10})),
        (35, lambda: world.respond(refs[2])),
        (40, lambda: world.status(gleb, "away")),
        (50, lambda: world.submit(attributes={"amount": 20}, priority=2)),
        (95, lambda: answer(True)),
        (100, lambda: world.complete(refs[2])),
        (110, lambda: world.batch(2, attributes={"amount": 3000})),
        (120, lambda: answer(False)),
        (131, lambda: world.status(gleb, "available")),
        (140, lambda: world.respond(refs[3])),
        (145, lambda: world.submit(attributes={"amount": 30})),
        (200, lambda: answer(True)),
        (205, lambda: answer(False)),
        (210, lambda: world.submit(attributes={"amount": 40})),
        (250, lambda: world.status(boris, "offline")),
        (320, lambda: world.complete(refs[0])),
        (330, lambda: answer(True)),
        (340, lambda: world.submit(attributes={"amount": 7000})),
        (360, lambda: world.status(boris, "available")),
        (380, lambda: world.complete(refs[5])),
        (450, lambda: answer(False)),
        (460, lambda: world.submit(attributes={"vip": True})),  # offered to Dina
        (465, lambda: world.status(dina, "away")),  # her offer is withdrawn
        (470, lambda: world.status(dina, "available")),  # and made again
        (480, lambda: world.submit(attributes={"amount": 50})),
    ]
    for moment, step in steps:
        await world.at(moment)
        made = await step()
        if isinstance(made, str):
            refs.append(made)
        elif isinstance(made, list):
            refs += made
    await world.at(600)
    await assert_invariants(db)
    return {"anna": anna, "boris": boris, "vera": vera, "gleb": gleb, "dina": dina,
            "refs": refs, "rule_set": rule_set}  # fmt: skip


async def test_replaying_an_offer_history_under_rules_gives_every_item_its_real_owner(
    database, clock
):
    world = World(database, clock)
    made = await offer_history(world)
    async with database.reader() as session:
        statuses = set((await session.execute(select(Offer.status))).scalars())
    assert {"accepted", "declined", "timed_out", "rescinded"} <= statuses
    whole = await world.simulate(0, 600)
    assert whole.recorded.assignments >= 6
    assert_reproduced(whole)
    assert_reproduced(await world.simulate(100, 600))
    assert_reproduced(await world.simulate(120, 330))
    # The active rule set given as the rules to try, for items arriving after it was active.
    async with database.reader() as session:
        active = await rules_from_json(session, json.dumps(OFFER_RULES))
    assert made["rule_set"].status == "active"
    assert_reproduced(await world.simulate(6, 600, rules=active))


SENIORS_RULES = {"filters": [{"name": "big", "when": "amount >= 1000", "queue": "Seniors"}]}


async def two_queue_history(world: World) -> dict:
    """No rules: every item goes to General (Anna and Boris, least loaded); Vera is alone in
    Seniors and gets nothing. Six big and six small items, in turn, nothing completed."""
    await make_queue(world.database, name="General", priority=10)
    await make_queue(world.database, name="Seniors", member_expression='"senior" in skills')
    anna = await world.agent(name="Anna", capacity=10)
    await world.at(1)
    boris = await world.agent(name="Boris", capacity=10)
    await world.at(2)
    vera = await world.agent(name="Vera", capacity=10, skills=["senior"])
    big, small = [], []
    for n in range(12):
        await world.at(10 + n * 10)
        if n % 2:
            small.append(await world.submit(attributes={"amount": 10}))
        else:
            big.append(await world.submit(attributes={"amount": 5000}))
    await world.at(200)
    return {"anna": anna, "boris": boris, "vera": vera, "big": big, "small": small}


async def test_another_rule_set_gives_the_predicted_change(database, clock):
    world = World(database, clock)
    made = await two_queue_history(world)
    async with database.reader() as session:
        seniors = await rules_from_json(session, json.dumps({"definition": SENIORS_RULES}))
        ids = dict((await session.execute(select(WorkItem.reference, WorkItem.id))).all())
    before = await world.owners()
    assert_reproduced(await world.simulate(0, 200))
    report = await world.simulate(0, 200, rules=seniors)
    anna, boris, vera = made["anna"].id, made["boris"].id, made["vera"].id
    rows = {row.agent_id: row for row in report.agents}
    assert (rows[anna].recorded, rows[boris].recorded, rows[vera].recorded) == (6, 6, 0)
    # The big items go to Vera; the small ones still alternate between Anna and Boris.
    assert (rows[anna].simulated, rows[boris].simulated, rows[vera].simulated) == (3, 3, 6)
    assert (rows[vera].change, rows[anna].change + rows[boris].change) == (6, -6)
    assert all(report.owners[ids[ref]][1] == vera for ref in made["big"])
    assert {report.owners[ids[ref]][1] for ref in made["small"]} == {anna, boris}
    assert report.changed_items >= 6
    assert report.rules == "file"
    assert await world.owners() == before  # a simulation changes nothing
