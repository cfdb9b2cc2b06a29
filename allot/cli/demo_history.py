"""The demo's recorded past: ten days of loan applications, worked by the simulated operators.

Why it is played in time order: the what-if simulator replays the record (intake, offers and
their answers, agent availability, handling times) and the lead analytics measure first
responses and conversion, so the history must be one that could have happened. Every action —
a lead arriving, an operator answering an offer, a first response, a status change — runs at its
own moment on the kernel clock, earliest first, so an operator's load at any moment is what it
really was then and the live engine made every routing decision on that state.

Two kinds of leads: a handful written by hand (with notes; the recent ones are still open, so
the floor has work in hand), and a generated week before them, drawn from a fixed seed so every
run of `allot demo` is the same. Sources convert differently and operators answer at different
speeds, so the analytics page has something to say ("which source converts best and who
answers slowest"), and about one application in eight is a big loan, so a rule sending big
loans to «Крупные займы» visibly changes who would have got them.
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from allot.cli.demo_floor import MEN, WOMEN, operator_actor
from allot.cli.demo_floor import SURNAMES as FLOOR_SURNAMES
from allot.contexts import leads
from allot.contexts.leads import repository as lead_repository
from allot.contexts.leads import service as lead_service
from allot.contexts.leads.access import Viewer
from allot.contexts.routing import agent_service
from allot.contexts.routing import service as routing_service
from allot.contexts.routing.models import Agent
from allot.kernel.clock import ManualClock, set_clock, utcnow
from allot.kernel.context import bound


@dataclass(frozen=True)
class SeedLead:
    name: str
    phone: str
    source: str
    rubles: int
    months: int
    region: str
    path: str  # the statuses it went through, "in_progress>qualified>won"; "" = still new
    hours_ago: float = 0.0
    lost_reason: str | None = None
    note: str | None = None
    # Hours between the later statuses; None: spread over the lead's age (at most two days).
    step_hours: float | None = None

    def new_lead(self, external_id: str) -> leads.NewLead:
        return leads.NewLead(
            source=self.source, external_id=external_id, customer_name=self.name,
            customer_phone=self.phone, attributes={"region": self.region},
            priority=10 if self.rubles >= 150_000 else 0, amount_minor=self.rubles * 100,
            term_months=self.months,
        )  # fmt: skip


WON = "in_progress>qualified>won"
SEED_LEADS = (  # oldest first: ids are time-ordered and the list shows the newest first
    SeedLead("Сергей Иванов", "+7 916 234-56-78", "site", 50_000, 6, "Москва", WON, 240,
             note="Нужны деньги на ремонт, зарплата 85 000 ₽."),
    SeedLead("Ольга Кузнецова", "+7 903 112-45-67", "partner_bankiros", 120_000, 12, "Москва",
             WON, 216),
    SeedLead("Алексей Соколов", "+7 925 345-12-90", "call_center", 30_000, 3, "Москва", "lost",
             200, "unreachable", "Три звонка без ответа, SMS не прочитано."),
    SeedLead("Марина Лебедева", "+7 917 876-54-32", "site", 250_000, 24, "Казань", WON, 170,
             note="Рефинансирование двух кредитных карт."),
    SeedLead("Рустам Галиев", "+7 987 210-33-44", "partner_bankiros", 80_000, 9, "Казань",
             "in_progress>lost", 150, "rejected", "Просрочки в кредитной истории."),
    SeedLead("Татьяна Морозова", "+7 926 555-17-29", "site", 15_000, 3, "Москва", WON, 120),
    SeedLead("Дмитрий Волков", "+7 999 640-21-08", "call_center", 200_000, 18, "Москва",
             "in_progress>qualified>lost", 100, "competitor", "Взял в другом банке под 19%."),
    SeedLead("Наталья Павлова", "+7 915 782-64-11", "site", 40_000, 6, "Москва", WON, 75),
    SeedLead("Айгуль Сафина", "+7 917 293-48-56", "partner_bankiros", 100_000, 12, "Казань",
             WON, 50, note="Предпочитает общение в мессенджере."),
    SeedLead("Игорь Николаев", "+7 905 318-77-02", "site", 300_000, 24, "Москва",
             "in_progress>lost", 30, "not_interested", "Передумал, решил подкопить."),
    SeedLead("Екатерина Орлова", "+7 916 401-92-35", "site", 60_000, 6, "Москва",
             "in_progress>qualified", 6, note="Документы пришлёт вечером."),
    SeedLead("Павел Фёдоров", "+7 929 114-08-63", "partner_bankiros", 150_000, 12, "Москва",
             "in_progress>qualified", 5),
    SeedLead("Ильдар Хасанов", "+7 987 655-29-10", "call_center", 90_000, 12, "Казань",
             "in_progress>qualified", 4, note="Нужен ответ до пятницы."),
    SeedLead("Светлана Егорова", "+7 903 978-13-47", "site", 25_000, 3, "Москва", "in_progress",
             3),
    SeedLead("Андрей Козлов", "+7 925 207-66-84", "partner_bankiros", 180_000, 18, "Москва",
             "in_progress", 2.5, note="Просит перезвонить после 18:00."),
    SeedLead("Лилия Зарипова", "+7 917 430-85-19", "site", 35_000, 6, "Казань", "in_progress",
             2),
    SeedLead("Максим Попов", "+7 915 662-40-73", "call_center", 70_000, 9, "Москва",
             "in_progress", 1.5),
    SeedLead("Юлия Васильева", "+7 926 843-57-26", "site", 45_000, 6, "Москва", "in_progress",
             1),
    SeedLead("Никита Семёнов", "+7 999 371-20-95", "partner_bankiros", 5_000, 3, "Москва", WON,
             0.8),
    SeedLead("Анастасия Голубева", "+7 905 726-31-58", "site", 110_000, 12, "Москва", "lost",
             0.5, "unreachable"),
    SeedLead("Роман Виноградов", "+7 916 588-03-14", "site", 20_000, 3, "Москва", ""),
    SeedLead("Эльвира Мухаметова", "+7 987 104-67-32", "partner_bankiros", 130_000, 12,
             "Казань", ""),
    SeedLead("Виктор Богданов", "+7 903 249-81-65", "call_center", 75_000, 9, "Москва", ""),
    SeedLead("Ксения Тихонова", "+7 929 635-92-07", "site", 55_000, 6, "Москва", ""),
    SeedLead("Артём Киселёв", "+7 925 917-45-80", "partner_bankiros", 280_000, 24, "Москва", ""),
)  # fmt: skip


# -- the generated week -------------------------------------------------------------------------
@dataclass(frozen=True)
class Habits:
    """How a simulated operator worked: seconds to answer an offer (inside its 60 s), minutes
    from accepting to the first response (inside the queue's 15-minute first-response SLA: a
    breach would have had the lead reclaimed and offered again, which this history does not
    play), and the share of offers they declined."""

    answer_seconds: tuple[int, int]
    first_response_minutes: tuple[int, int]
    decline_share: float


HABITS = {
    "gulnara.khabibullina@demo.allot": Habits((5, 20), (1, 5), 0.03),
    "ivan.petrov@demo.allot": Habits((10, 35), (3, 9), 0.05),
    "manager@demo.allot": Habits((15, 50), (7, 14), 0.12),  # the manager answers slowest
}
DEFAULT_HABITS = Habits((10, 40), (3, 10), 0.05)

BUSINESS_ZONE = ZoneInfo("Europe/Moscow")
HISTORY_SEED = 2026
GENERATED_DAYS = (10, 9, 8, 7, 6, 5, 4, 3, 2)  # days ago, after the queues and agents were made
# Share of leads that end won, by source: partners send prepared borrowers.
WIN_SHARE = {"partner_bankiros": 0.45, "site": 0.28, "call_center": 0.17}
SOURCES = (("site", 0.45), ("partner_bankiros", 0.30), ("call_center", 0.25))
RUBLES = (5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 50_000, 70_000, 100_000, 120_000,
          150_000, 200_000, 250_000, 300_000, 400_000, 500_000)  # fmt: skip
RUBLE_WEIGHTS = (4, 6, 6, 6, 8, 8, 9, 8, 8, 6, 6, 5, 4, 6, 4, 3)
# The floor's made-up names (demo_floor.py), with more surnames: ten days of applications need
# more distinct people than the floor's few minutes.
MORE_SURNAMES = ("Петров", "Андреев", "Макаров", "Захаров", "Зайцев", "Соловьёв", "Борисов",
                 "Яковлев", "Григорьев", "Романов", "Воробьёв", "Сергеев", "Кузьмин",
                 "Фролов", "Александров", "Дмитриев", "Королёв", "Гусев", "Киселёв", "Ильин",
                 "Максимов", "Поляков", "Сорокин", "Виноградов", "Ковалёв", "Белов",
                 "Медведев", "Антонов", "Тарасов", "Жуков", "Баранов", "Филиппов", "Комаров",
                 "Давыдов", "Беляев", "Герасимов", "Богданов", "Осипов", "Сидоров",
                 "Матвеев", "Титов", "Марков", "Миронов", "Крылов", "Куликов", "Карпов",
                 "Власов", "Мельников", "Денисов", "Гаврилов", "Тихонов", "Казаков",
                 "Афанасьев", "Данилов", "Савельев", "Тимофеев", "Фомин", "Чернов",
                 "Абрамов", "Мартынов", "Ефимов", "Федотов", "Щербаков", "Назаров",
                 "Калинин", "Исаев", "Чернышёв", "Быков", "Маслов", "Родионов", "Коновалов",
                 "Лазарев", "Воронин", "Климов", "Филатов", "Пономарёв", "Голубев",
                 "Кудрявцев")  # fmt: skip
SURNAMES = (*FLOOR_SURNAMES, *MORE_SURNAMES)
LOSSES = (
    ("lost", "unreachable"),
    ("in_progress>lost", "rejected"),
    ("in_progress>lost", "not_interested"),
    ("in_progress>qualified>lost", "competitor"),
)


def generated_week(now: datetime, seed: int = HISTORY_SEED) -> list[SeedLead]:
    """Applications of the days before the hand-written ones, 12-20 a day in business hours
    (9:00-20:00 Moscow), each worked to won or lost within the day or the next."""
    rng = random.Random(seed)
    today = now.astimezone(BUSINESS_ZONE).replace(hour=0, minute=0, second=0, microsecond=0)
    surnames = list(SURNAMES)
    rng.shuffle(surnames)
    names = itertools.cycle(surnames)
    phones: set[str] = set()
    generated: list[SeedLead] = []
    for days_ago in GENERATED_DAYS:
        day = today - timedelta(days=days_ago)
        arrivals = sorted(rng.uniform(9, 20) for _ in range(rng.randint(12, 20)))
        for hour in arrivals:
            moment = day + timedelta(hours=hour)
            source = rng.choices([s for s, _ in SOURCES], [w for _, w in SOURCES])[0]
            if rng.random() < WIN_SHARE[source]:
                path, reason = WON, None
            else:
                path, reason = rng.choice(LOSSES)
            woman = rng.random() < 0.5
            first = rng.choice(WOMEN if woman else MEN)
            surname = next(names) + ("а" if woman else "")
            phone = _new_phone(rng, phones)
            generated.append(
                SeedLead(
                    name=f"{first} {surname}",
                    phone=phone,
                    source=source,
                    rubles=rng.choices(RUBLES, RUBLE_WEIGHTS)[0],
                    months=rng.choice((3, 6, 9, 12, 18, 24)),
                    region="Казань" if rng.random() < 0.35 else "Москва",
                    path=path,
                    hours_ago=(now - moment).total_seconds() / 3600,
                    lost_reason=reason,
                    step_hours=rng.uniform(0.5, 4),
                )
            )
    return generated


def _new_phone(rng: random.Random, taken: set[str]) -> str:
    while True:
        digits = f"9{rng.randint(0, 99):02d}{rng.randint(0, 9_999_999):07d}"
        phone = f"+7 {digits[:3]} {digits[3:6]}-{digits[6:8]}-{digits[8:]}"
        if phone not in taken:
            taken.add(phone)
            return phone


def history_leads(now: datetime) -> list[SeedLead]:
    """Every lead of the recorded past, oldest first."""
    return sorted([*generated_week(now), *SEED_LEADS], key=lambda lead: -lead.hours_ago)


# -- playing it in time order ---------------------------------------------------------------------
Action = Callable[[AsyncSession], Awaitable[None]]


class HistoryPlayer:
    """Runs scheduled actions earliest first, each with the kernel clock at its moment.

    After every action it looks for offers the engine has just made (a lead arrived, an
    operator declined, capacity freed and the backlog moved) and schedules their answers from
    that moment, inside the offer's timeout: the record then holds no offer that should have
    timed out, which the simulator would replay as one that did."""

    def __init__(self, session: AsyncSession, agents: dict[uuid.UUID, Agent], now: datetime):
        self.session = session
        self.agents = agents
        self.now = now
        self.rng = random.Random(HISTORY_SEED + 1)
        self.clock = ManualClock(now)
        self.leads: dict[str, tuple[SeedLead, uuid.UUID]] = {}  # by routing reference
        self._answered: set[uuid.UUID] = set()  # offers whose answer is scheduled
        self._queue: list[tuple[datetime, int, Action]] = []
        self._order = itertools.count()

    def at(self, moment: datetime, action: Action) -> None:
        if moment <= self.now:  # nothing is recorded in the future: it stays as it stands now
            heapq.heappush(self._queue, (moment, next(self._order), action))

    async def play(self) -> None:
        previous = set_clock(self.clock)
        try:
            while self._queue:
                moment, _, action = heapq.heappop(self._queue)
                self.clock.set(moment)
                await action(self.session)
                await self._schedule_answers(self.session)
        finally:
            set_clock(previous)

    def habits(self, agent: Agent) -> Habits:
        return HABITS.get(agent.email or "", DEFAULT_HABITS)

    def arrive(self, seed: SeedLead, external_id: str) -> None:
        async def action(session: AsyncSession) -> None:
            lead = await leads.create_lead(session, seed.new_lead(external_id))
            if seed.path:  # a lead without one is still new: nobody answers its offer
                self.leads[f"lead:{lead.id}"] = (seed, lead.id)

        self.at(self.now - timedelta(hours=seed.hours_ago), action)

    async def _schedule_answers(self, session: AsyncSession) -> None:
        for agent in self.agents.values():
            for offer in await routing_service.pending_offers_of(session, agent.id):
                if offer.id in self._answered or offer.reference not in self.leads:
                    continue
                self._answered.add(offer.id)
                delay = timedelta(seconds=self.rng.uniform(*self.habits(agent).answer_seconds))
                self.at(self.clock.now() + delay, self.answer(offer.id, offer.reference, agent))

    def answer(self, offer_id: uuid.UUID, reference: str, agent: Agent) -> Action:
        """The operator answers the offer: declines now and then (the engine offers the lead to
        the next one), otherwise accepts and responds within their usual time."""
        seed, lead_id = self.leads[reference]

        async def action(session: AsyncSession) -> None:
            habits = self.habits(agent)
            with bound(actor=operator_actor(agent.user_id, agent.email)):
                if self.rng.random() < habits.decline_share:
                    await routing_service.decline_offer(session, offer_id, agent.id)
                    return
                await routing_service.accept_offer(session, offer_id, agent.id)
            minutes = self.rng.uniform(*habits.first_response_minutes)
            respond = self.respond(seed, lead_id, agent)
            self.at(self.clock.now() + timedelta(minutes=minutes), respond)

        return action

    def respond(self, seed: SeedLead, lead_id: uuid.UUID, agent: Agent) -> Action:
        """The first response (a note if there is one, then the first status); later statuses
        follow at their own moments."""
        first, *later = seed.path.split(">")
        if seed.step_hours is not None:
            spacing = timedelta(hours=seed.step_hours)
        else:
            spacing = timedelta(hours=min(seed.hours_ago, 48) * 0.8 / max(len(later), 1))

        async def action(session: AsyncSession) -> None:
            with bound(actor=operator_actor(agent.user_id, agent.email)):
                if seed.note:
                    await lead_service.add_note(session, lead_id, seed.note, _viewer(agent))
                await _change(session, lead_id, first, seed, agent)
            for number, status in enumerate(later, 1):
                later_action = self._later(seed, lead_id, status, agent)
                self.at(self.clock.now() + spacing * number, later_action)

        return action

    def _later(self, seed: SeedLead, lead_id: uuid.UUID, status: str, agent: Agent) -> Action:
        async def action(session: AsyncSession) -> None:
            with bound(actor=operator_actor(agent.user_id, agent.email)):
                await _change(session, lead_id, status, seed, agent)

        return action


def _viewer(agent: Agent) -> Viewer:
    return Viewer(sees_all=True, agent_id=agent.id)


async def _change(
    session: AsyncSession, lead_id: uuid.UUID, status: str, seed: SeedLead, agent: Agent
) -> None:
    reason = seed.lost_reason if status == "lost" else None
    await lead_service.change_status(session, lead_id, status, _viewer(agent), lost_reason=reason)


async def play_history(session: AsyncSession, created: list[str]) -> None:
    """Leads: loan applications of the last ten days, worked by the simulated operators."""
    now = utcnow()
    agents = {agent.id: agent for agent in await agent_service.list_agents(session)}
    player = HistoryPlayer(session, agents, now)
    written = {id(seed): number for number, seed in enumerate(SEED_LEADS, 1)}
    generated = itertools.count(1)
    for seed in history_leads(now):
        # Hand-written leads keep the ids they always had, so an older demo database is
        # recognised; generated ones have their own series.
        number = written.get(id(seed))
        external_id = f"demo-{number:03d}" if number else f"demo-w{next(generated):03d}"
        if await lead_repository.lead_id_by_external_id(session, seed.source, external_id):
            continue
        player.arrive(seed, external_id)
        created.append(f"lead {seed.name}")
    await player.play()
