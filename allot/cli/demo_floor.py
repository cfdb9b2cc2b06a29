"""The demo floor: a stream of new leads and simulated operators, so `allot demo` looks alive.

While the demo serves, a background task in the server's own event loop ticks about once a
second. New leads arrive every few seconds; the simulated operators (every demo agent but the
one left to the human) answer their offers after a while, mostly accepting, and carry their leads
along the pipeline until won or lost, which frees their capacity so the backlog moves. Everything
goes through the same service functions the UI and the API call, one short transaction per
action; nothing is held open while the task waits.

Decisions are taken against the process clock (`utcnow`), so a test drives `step()` under a
ManualClock instead of sleeping. Plans live in memory: after a restart they are simply made again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import leads
from allot.contexts.leads import service as lead_service
from allot.contexts.leads.access import Viewer
from allot.contexts.routing import agent_service, queue_service
from allot.contexts.routing import service as routing_service
from allot.kernel.clock import utcnow
from allot.kernel.context import Actor, bound
from allot.kernel.db.engine import Database
from allot.kernel.errors import AllotError
from allot.kernel.logging import get_logger

log = get_logger(__name__)

FLOOR_ACTOR = Actor.system("demo-floor")
TICK_SECONDS = 1.0
LEAD_EVERY_SECONDS = (3.0, 8.0)
ANSWER_AFTER_SECONDS = (5.0, 30.0)
FIRST_MOVE_AFTER_SECONDS = (5.0, 15.0)
NEXT_MOVE_AFTER_SECONDS = (10.0, 25.0)
BACKOFF_SECONDS = 15.0
HEARTBEAT_EVERY_SECONDS = 60.0  # well inside the presence grace (3 minutes by default)
DECLINE_SHARE = 0.1
KEEP_GOING_SHARE = 0.8  # of moves that could continue the pipeline instead of closing the lead
WON_SHARE = 0.65  # of closing moves
NOTE_SHARE = 0.5
MAX_LEADS = 500
MAX_BACKLOG = 30
STOP_GRACE_SECONDS = 10.0
SIM_LOST_REASONS = ("unreachable", "not_interested", "rejected", "competitor")

# -- made-up customers ------------------------------------------------------------------------
MEN = ("Александр", "Сергей", "Дмитрий", "Андрей", "Алексей", "Максим", "Евгений", "Игорь",
       "Николай", "Павел", "Роман", "Олег", "Ильдар", "Тимур", "Рустам", "Артём")  # fmt: skip
WOMEN = ("Елена", "Ольга", "Наталья", "Татьяна", "Ирина", "Светлана", "Анастасия", "Мария",
         "Юлия", "Екатерина", "Ксения", "Дарья", "Айгуль", "Лилия", "Гульшат", "Алина")  # fmt: skip
SURNAMES = ("Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Соколов", "Михайлов",
            "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов",
            "Егоров", "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Галиев", "Сафин",
            "Хасанов", "Гарипов", "Валиев")  # fmt: skip
SOURCES = (("site", 5), ("partner_bankiros", 3), ("call_center", 2))
REGIONS = (("Москва", 3), ("Казань", 1))
TERMS = (3, 6, 9, 12, 18, 24)
NOTES = {
    "in_progress": ("Дозвонился, клиент подтвердил заявку.",
                    "Клиент просит перезвонить после 18:00.",
                    "Отправил список документов в мессенджер."),
    "qualified": ("Паспорт и СНИЛС получены, доход подтверждён.",
                  "Кредитная история чистая, передаю на одобрение.",
                  "Клиент согласен на срок и ставку."),
    "won": ("Договор подписан, выдача на карту.", "Займ выдан, клиент доволен."),
    "lost": ("Клиент не берёт трубку третий день.", "Нашёл предложение дешевле у конкурента.",
             "Не проходит по возрасту и доходу."),
}  # fmt: skip


def random_lead(rng: random.Random) -> leads.NewLead:
    """A plausible loan application: Russian name, +7 9xx mobile, amount and term."""
    woman = rng.random() < 0.5
    surname = rng.choice(SURNAMES) + ("а" if woman else "")
    name = f"{rng.choice(WOMEN if woman else MEN)} {surname}"
    phone = f"+7 9{rng.randint(0, 99):02d} {rng.randint(0, 999):03d}-{rng.randint(0, 99):02d}-"
    phone += f"{rng.randint(0, 99):02d}"
    source = _weighted(rng, SOURCES)
    rubles = rng.choice((5, 10, 15, 20, 30, 50, 70, 100, 150, 200, 250, 300)) * 1000
    external_id = None if source == "site" else f"{source[:3]}-{rng.getrandbits(40):010x}"
    return leads.NewLead(
        source=source,
        external_id=external_id,
        customer_name=name,
        customer_phone=phone,
        attributes={"region": _weighted(rng, REGIONS)},
        priority=10 if rubles >= 150_000 else 0,
        amount_minor=rubles * 100,
        currency="RUB",
        term_months=rng.choice(TERMS),
    )


def _weighted(rng: random.Random, choices: Sequence[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def operator_actor(user_id: uuid.UUID | None, email: str | None) -> Actor:
    """A simulated operator: the agent's own user, labelled so the audit trail says it was not
    a person at the keyboard."""
    return Actor(kind="user", id=user_id, label=f"{email or 'agent'} (demo-floor)")


# -- what the floor looks like at one moment --------------------------------------------------
@dataclass(frozen=True, slots=True)
class SimAgent:
    id: uuid.UUID
    user_id: uuid.UUID | None
    email: str | None
    status: str
    last_heartbeat_at: datetime | None

    @property
    def actor(self) -> Actor:
        return operator_actor(self.user_id, self.email)


@dataclass(slots=True)
class Snapshot:
    agents: list[SimAgent] = field(default_factory=list)
    offers: list[tuple[uuid.UUID, SimAgent]] = field(default_factory=list)  # pending, by id
    items: list[tuple[str, SimAgent]] = field(default_factory=list)  # owned work, by reference


@dataclass(slots=True)
class OfferPlan:
    due: datetime
    decline: bool


@dataclass(slots=True)
class StepReport:
    """What one tick did (tests read it)."""

    leads_created: int = 0
    accepted: int = 0
    declined: int = 0
    moved: int = 0


class DemoFloor:
    """The simulator. `step()` is one tick; `start()`/`stop()` run it in the background."""

    def __init__(
        self,
        database: Database,
        simulated_emails: Collection[str],
        *,
        rng: random.Random | None = None,
        decline_share: float = DECLINE_SHARE,
        max_leads: int = MAX_LEADS,
        max_backlog: int = MAX_BACKLOG,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self.database = database
        self.emails = frozenset(email.lower() for email in simulated_emails)
        self.rng = rng or random.Random()
        self.decline_share = decline_share
        self.max_leads = max_leads
        self.max_backlog = max_backlog
        self.tick_seconds = tick_seconds
        self.leads_created = 0
        self._next_lead_at: datetime | None = None
        self._offers: dict[uuid.UUID, OfferPlan] = {}
        self._moves: dict[str, datetime] = {}
        self._shift_started = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="allot-demo-floor")

    async def stop(self) -> None:
        """Finish the current action (its transaction commits or rolls back), then end."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, STOP_GRACE_SECONDS)
        except TimeoutError:
            log.warning("demo floor did not stop in time; cancelled")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.step()
            except Exception:  # a database hiccup must not end the demo
                log.exception("demo floor tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.tick_seconds)

    # -- one tick ----------------------------------------------------------------------------
    async def step(self) -> StepReport:
        report = StepReport()
        snapshot = await self._look()
        now = utcnow()
        await self._keep_present(snapshot, now)
        if await self._maybe_new_lead(now):
            report.leads_created += 1
        await self._answer_offers(snapshot, now, report)
        await self._move_leads(snapshot, now, report)
        return report

    async def _look(self) -> Snapshot:
        snapshot = Snapshot()
        async with self.database.reader() as session:
            for agent in await agent_service.list_agents(session):
                if (agent.email or "").lower() not in self.emails:
                    continue
                sim = SimAgent(
                    agent.id, agent.user_id, agent.email, agent.status, agent.last_heartbeat_at
                )
                snapshot.agents.append(sim)
                for row in await routing_service.pending_offers_of(session, agent.id):
                    snapshot.offers.append((row.id, sim))
                for item in await routing_service.open_items_of(session, agent.id):
                    snapshot.items.append((item.reference, sim))
        return snapshot

    async def _act(
        self, actor: Actor, work: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> bool:
        """`work(session, *args, **kwargs)` in its own transaction. The floor moves on either
        way: a refused action (the offer expired, a person moved the lead first) is normal, a
        bug is logged."""

        async def unit(session: AsyncSession) -> Any:
            return await work(session, *args, **kwargs)

        try:
            with bound(actor=actor):
                await self.database.run(unit)
        except AllotError as exc:
            log.info("demo floor action refused", problem=exc.code, detail=exc.detail)
            return False
        except Exception:
            log.exception("demo floor action failed")
            return False
        return True

    async def _keep_present(self, snapshot: Snapshot, now: datetime) -> None:
        """Heartbeats, as an open inbox sends them. On the first tick the shift begins: agents
        who went offline while the demo was stopped come back; later a status someone set by
        hand (a manager trying "offline") is left alone."""
        for agent in snapshot.agents:
            if not self._shift_started and agent.status == "offline":
                await self._act(
                    agent.actor,
                    agent_service.set_status,
                    agent.id,
                    "available",
                    reason="demo_floor",
                )
            elif agent.status != "offline" and (
                agent.last_heartbeat_at is None
                or now - agent.last_heartbeat_at >= timedelta(seconds=HEARTBEAT_EVERY_SECONDS)
            ):
                await self._act(agent.actor, agent_service.heartbeat, agent.id)
        if snapshot.agents:
            self._shift_started = True

    async def _maybe_new_lead(self, now: datetime) -> bool:
        if self.leads_created >= self.max_leads:
            return False
        if self._next_lead_at is not None and now < self._next_lead_at:
            return False
        if await self._backlog() > self.max_backlog:
            self._next_lead_at = now + timedelta(seconds=BACKOFF_SECONDS)
            return False
        self._next_lead_at = now + timedelta(seconds=self.rng.uniform(*LEAD_EVERY_SECONDS))
        new = random_lead(self.rng)
        if not await self._act(FLOOR_ACTOR, leads.create_lead, new):
            return False
        self.leads_created += 1
        return True

    async def _backlog(self) -> int:
        async with self.database.reader() as session:
            return sum(row.waiting for row in await queue_service.queue_stats(session))

    async def _answer_offers(self, snapshot: Snapshot, now: datetime, report: StepReport) -> None:
        pending = {offer_id for offer_id, _ in snapshot.offers}
        for offer_id in set(self._offers) - pending:  # answered, expired or withdrawn
            del self._offers[offer_id]
        for offer_id, agent in snapshot.offers:
            plan = self._offers.get(offer_id)
            if plan is None:
                delay = timedelta(seconds=self.rng.uniform(*ANSWER_AFTER_SECONDS))
                self._offers[offer_id] = OfferPlan(
                    now + delay, decline=self.rng.random() < self.decline_share
                )
                continue
            if now < plan.due:
                continue
            del self._offers[offer_id]
            if plan.decline:
                done = await self._act(
                    agent.actor, routing_service.decline_offer, offer_id, agent.id
                )
                report.declined += int(done)
            else:
                done = await self._act(
                    agent.actor, routing_service.accept_offer, offer_id, agent.id
                )
                report.accepted += int(done)

    async def _move_leads(self, snapshot: Snapshot, now: datetime, report: StepReport) -> None:
        owned = {reference for reference, _ in snapshot.items}
        for reference in set(self._moves) - owned:  # closed, or taken back by routing
            del self._moves[reference]
        for reference, agent in snapshot.items:
            lead_id = _lead_id(reference)
            if lead_id is None:
                continue
            due = self._moves.get(reference)
            if due is None:
                delay = self.rng.uniform(*FIRST_MOVE_AFTER_SECONDS)
                self._moves[reference] = now + timedelta(seconds=delay)
                continue
            if now < due:
                continue
            delay = self.rng.uniform(*NEXT_MOVE_AFTER_SECONDS)
            self._moves[reference] = now + timedelta(seconds=delay)
            moved = await self._act(agent.actor, self._advance, lead_id, agent.id)
            report.moved += int(moved)

    async def _advance(
        self, session: AsyncSession, lead_id: uuid.UUID, agent_id: uuid.UUID
    ) -> None:
        """The next step of the lead's pipeline, as its operator would click it (maybe with a
        note first). Reads the allowed moves, so an edited pipeline still works."""
        viewer = Viewer(sees_all=True, agent_id=agent_id)
        lead = await lead_service.get_lead(session, lead_id, viewer)
        target, reason = self.choose_move(await lead_service.allowed_targets(session, lead))
        if target is None:
            return
        outcome = "lost" if target.is_terminal and not target.is_won else target.key
        if outcome in NOTES and self.rng.random() < NOTE_SHARE:
            await lead_service.add_note(session, lead_id, self.rng.choice(NOTES[outcome]), viewer)
        await lead_service.change_status(session, lead_id, target.key, viewer, lost_reason=reason)

    def choose_move(self, targets: Sequence[Any]) -> tuple[Any | None, str | None]:
        """Mostly onwards along the pipeline; when closing, mostly won."""
        onwards = sorted((t for t in targets if not t.is_terminal), key=lambda t: t.position)
        won = [t for t in targets if t.is_terminal and t.is_won]
        lost = [t for t in targets if t.is_terminal and not t.is_won]
        if onwards and (self.rng.random() < KEEP_GOING_SHARE or not (won or lost)):
            return onwards[0], None
        if won and (self.rng.random() < WON_SHARE or not lost):
            return won[0], None
        if lost:
            reasons = [r for r in SIM_LOST_REASONS if r in leads.LOST_REASONS]
            return lost[0], self.rng.choice(reasons) if reasons else None
        return None, None


def _lead_id(reference: str) -> uuid.UUID | None:
    kind, _, ident = reference.partition(":")
    if kind != "lead":
        return None
    try:
        return uuid.UUID(ident)
    except ValueError:
        return None


def install_floor(app: FastAPI, floor: DemoFloor) -> DemoFloor:
    """Run `floor` for as long as the app serves: started after the app's own start-up (the
    database, dispatcher and timers are ready), stopped before they shut down."""
    app.state.demo_floor = floor
    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        async with original(asgi_app) as state:
            floor.start()
            try:
                yield state
            finally:
                await floor.stop()

    app.router.lifespan_context = lifespan
    return floor
