"""`allot demo`: a working Allot with a realistic Russian-speaking team, in one command.

Demo data is loaded by a list of steps, one or more per context, each an async function given
a session and the shared `DemoState` (ids of what earlier steps made). A context adds its demo
data by appending a step to `DEMO_STEPS`. Steps are idempotent: they look before they create,
so running the demo twice changes nothing.

The data: two teams and six users (identity), one queue «Займы» and four agents (routing), and
25 loan applications of the last ten days at every stage of the pipeline (leads). While the demo
serves, `demo_floor.DemoFloor` keeps the floor moving: new leads arrive and every agent but the
one left for the person trying the demo answers offers and works leads.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from allot.app import create_app
from allot.cli.demo_floor import DemoFloor, install_floor, operator_actor
from allot.cli.migrate import upgrade_to
from allot.cli.runtime import (
    apply_migrations,
    console,
    fail,
    in_transaction,
    load_settings,
    progress,
    run,
    user_errors,
)
from allot.cli.serve import run_server
from allot.contexts import identity, leads
from allot.contexts.leads import repository as lead_repository
from allot.contexts.leads import service as lead_service
from allot.contexts.leads.access import Viewer
from allot.contexts.routing import agent_service, queue_service, rule_service
from allot.contexts.routing import service as routing_service
from allot.contexts.routing.models import Agent
from allot.contexts.routing.rule_schemas import RuleSetCreate
from allot.contexts.routing.rules import Ageing, Filter, RuleSetDefinition
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel import migrations
from allot.kernel.clock import ManualClock, set_clock, utcnow
from allot.kernel.config import Settings
from allot.kernel.context import bound
from allot.kernel.db.engine import Database
from allot.kernel.events.dispatcher import Dispatcher

# Fixed so the printed credentials stay true on every run; only ever used in demo databases.
DEMO_PASSWORD = "allot-demo-2025"  # noqa: S105 (printed to the user on purpose)
ADMIN_EMAIL = "admin@demo.allot"


@dataclass
class DemoState:
    """What the steps made so far, by natural key, for later steps to refer to."""

    user_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by email
    team_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by name
    agent_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by email
    queue_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by name
    created: list[str] = field(default_factory=list)  # human-readable, printed at the end


DemoStep = Callable[[AsyncSession, DemoState], Awaitable[None]]


@dataclass(frozen=True)
class DemoUser:
    email: str
    name: str
    roles: tuple[str, ...]
    team: str | None = None


TEAMS = ("Продажи Москва", "Продажи Казань")
USERS = (
    DemoUser(ADMIN_EMAIL, "Ирина Волкова", ("admin",)),
    DemoUser("manager@demo.allot", "Дмитрий Кузнецов", ("manager",), "Продажи Москва"),
    DemoUser("analyst@demo.allot", "Елена Попова", ("analyst",)),
    DemoUser("anna.smirnova@demo.allot", "Анна Смирнова", ("operator",), "Продажи Москва"),
    DemoUser("ivan.petrov@demo.allot", "Иван Петров", ("operator",), "Продажи Москва"),
    DemoUser("gulnara.khabibullina@demo.allot", "Гульнара Хабибуллина", ("operator",),
             "Продажи Казань"),
)  # fmt: skip


async def identity_teams(session: AsyncSession, state: DemoState) -> None:
    """Teams: two sales teams, in Moscow and Kazan."""
    existing = {team.name: team.id for team in await identity.list_teams(session)}
    for name in TEAMS:
        if name not in existing:
            existing[name] = (await identity.create_team(session, name)).id
            state.created.append(f"team {name}")
        state.team_ids[name] = existing[name]


async def identity_users(session: AsyncSession, state: DemoState) -> None:
    """Users: an admin, a manager, an analyst and three operators."""
    for person in USERS:
        user = await identity.get_user_by_email(session, person.email)
        if user is None:
            user = await identity.create_user(
                session,
                email=person.email,
                password=DEMO_PASSWORD,
                roles=list(person.roles),
                display_name=person.name,
                locale="ru",
                team_ids=[state.team_ids[person.team]] if person.team else [],
            )
            state.created.append(f"user {person.email}")
        state.user_ids[person.email] = user.id


# -- routing: one queue, four agents ----------------------------------------------------------
# One queue serves every lead (routing takes the highest-priority active queue of a kind), in
# offer mode so an operator's inbox shows offers with a countdown to accept or decline.
LOANS_QUEUE = QueueCreate(
    name="Займы",
    work_kinds=["lead"],
    member_expression='"loans" in skills',
    strategy="least_loaded",
    offer_mode="offer",
    offer_timeout_seconds=60,
    first_response_seconds=900,
)
# Nothing routes here until a manager's rule sends big loans to it (the demo's rules exercise).
BIG_LOANS_QUEUE = QueueCreate(
    name="Крупные займы",
    work_kinds=[],
    member_expression='"big_loans" in skills',
    strategy="least_loaded",
    offer_mode="offer",
    offer_timeout_seconds=60,
    first_response_seconds=900,
)
DEMO_RULES = RuleSetCreate(
    name="Все заявки — в «Займы»",
    comment="Первая версия: одна очередь; ожидающие заявки поднимаются в приоритете.",
    definition=RuleSetDefinition(
        filters=[Filter(name="Все заявки", queue=LOANS_QUEUE.name)],
        ageing=Ageing(every_seconds=600, raise_by=1, up_to=10),
    ),
    activate=True,
)
# The operator the person trying the demo signs in as; the floor simulates every other agent.
HUMAN_OPERATOR_EMAIL = "anna.smirnova@demo.allot"


@dataclass(frozen=True)
class DemoAgent:
    email: str
    capacity: int
    skills: tuple[str, ...]
    languages: tuple[str, ...]
    regions: tuple[str, ...]


AGENTS = (
    DemoAgent(HUMAN_OPERATOR_EMAIL, 4, ("loans", "refinancing"), ("ru", "en"), ("Москва",)),
    DemoAgent("ivan.petrov@demo.allot", 5, ("loans", "big_loans"), ("ru",), ("Москва",)),
    DemoAgent("gulnara.khabibullina@demo.allot", 5, ("loans",), ("ru", "tt"), ("Казань",)),
    DemoAgent("manager@demo.allot", 4, ("loans", "big_loans"), ("ru", "en"),
              ("Москва", "Казань")),
)  # fmt: skip
SIMULATED_EMAILS = tuple(a.email for a in AGENTS if a.email != HUMAN_OPERATOR_EMAIL)


# The floor's queues, rules and agents date from before the first seeded lead, so the recorded
# history is whole: the what-if simulator replays the last days from the agents' timelines.
HISTORY_STARTS_DAYS_AGO = 11


@contextmanager
def _before_the_seeded_history() -> Iterator[None]:
    previous = set_clock(ManualClock(utcnow() - timedelta(days=HISTORY_STARTS_DAYS_AGO)))
    try:
        yield
    finally:
        set_clock(previous)


async def routing_queue(session: AsyncSession, state: DemoState) -> None:
    """Routing: the queues «Займы» (offering leads to the least loaded operator) and
    «Крупные займы» (operators with the big_loans skill; no rule sends leads there yet)."""
    existing = {queue.name: queue.id for queue in await queue_service.list_queues(session)}
    for spec in (LOANS_QUEUE, BIG_LOANS_QUEUE):
        if spec.name not in existing:
            with _before_the_seeded_history():
                existing[spec.name] = (await queue_service.create_queue(session, spec)).id
            state.created.append(f"queue {spec.name}")
        state.queue_ids[spec.name] = existing[spec.name]


async def routing_rules(session: AsyncSession, state: DemoState) -> None:
    """Routing: rule set version 1, active: every lead to «Займы», priority ageing."""
    if not await rule_service.list_rule_sets(session):
        with _before_the_seeded_history():
            await rule_service.create_rule_set(session, DEMO_RULES)
        state.created.append("rule set 1")


async def _ensure_agents(
    session: AsyncSession, state: DemoState, specs: tuple[DemoAgent, ...]
) -> None:
    people = {person.email: person for person in USERS}
    for spec in specs:
        person = people[spec.email]
        user = await identity.get_user_by_email(session, spec.email)
        agent = await agent_service.agent_for_user(session, user.id) if user else None
        if agent is None:
            agent = await agent_service.create_agent(
                session,
                AgentCreate(
                    name=person.name,
                    email=spec.email,  # links the agent to the existing user
                    capacity=spec.capacity,
                    skills=list(spec.skills),
                    languages=list(spec.languages),
                    regions=list(spec.regions),
                    teams=[person.team] if person.team else [],
                    status="available",
                ),
            )
            state.created.append(f"agent {spec.email}")
        state.agent_ids[spec.email] = agent.id


async def routing_agents(session: AsyncSession, state: DemoState) -> None:
    """Routing: the simulated operators and the manager as agents, available."""
    with _before_the_seeded_history():
        await _ensure_agents(
            session, state, tuple(a for a in AGENTS if a.email in SIMULATED_EMAILS)
        )


async def routing_your_agent(session: AsyncSession, state: DemoState) -> None:
    """Routing: the operator left for you, available and with room for new offers."""
    # Made after the seeded leads, which are worked by the simulated agents: the person trying
    # the demo starts with an empty desk, so offers reach them as soon as they sign in.
    await _ensure_agents(
        session, state, tuple(a for a in AGENTS if a.email not in SIMULATED_EMAILS)
    )


# -- leads: applications, some already worked through -----------------------------------------
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


async def leads_seed(session: AsyncSession, state: DemoState) -> None:
    """Leads: loan applications of the last ten days, some worked through the pipeline."""
    now = utcnow()
    agents = {agent.id: agent for agent in await agent_service.list_agents(session)}
    for number, seed in enumerate(SEED_LEADS, 1):
        external_id = f"demo-{number:03d}"
        if await lead_repository.lead_id_by_external_id(session, seed.source, external_id):
            continue
        # Replayed at the time it happened, so lists, ages and durations look lived-in.
        clock = ManualClock(now - timedelta(hours=seed.hours_ago))
        previous = set_clock(clock)
        try:
            lead = await leads.create_lead(session, seed.new_lead(external_id))
            if seed.path:
                await _work_through(session, lead.id, seed, clock, agents)
        finally:
            set_clock(previous)
        state.created.append(f"lead {seed.name}")


async def _work_through(
    session: AsyncSession,
    lead_id: uuid.UUID,
    seed: SeedLead,
    clock: ManualClock,
    agents: dict[uuid.UUID, Agent],
) -> None:
    """The operator offered the lead accepts it, then moves it along `seed.path`."""
    reference = f"lead:{lead_id}"
    for agent in agents.values():
        offer = next(
            (o for o in await routing_service.pending_offers_of(session, agent.id)
             if o.reference == reference),
            None,
        )  # fmt: skip
        if offer is not None:
            break
    else:
        return  # nobody had room for it: it waits in the queue like any other
    viewer = Viewer(sees_all=True, agent_id=agent.id)
    first, *later = seed.path.split(">")
    # Answered within minutes (inside the first-response SLA); later steps spread over the
    # lead's age (at most two days), all before now.
    spacing = timedelta(hours=min(seed.hours_ago, 48) * 0.8 / max(len(later), 1))
    with bound(actor=operator_actor(agent.user_id, agent.email)):
        clock.advance(timedelta(minutes=2))
        await routing_service.accept_offer(session, offer.id, agent.id)
        if seed.note:
            clock.advance(timedelta(minutes=1))
            await lead_service.add_note(session, lead_id, seed.note, viewer)
        for status in (first, *later):
            reason = seed.lost_reason if status == "lost" else None
            await lead_service.change_status(session, lead_id, status, viewer, lost_reason=reason)
            clock.advance(spacing)


DEMO_STEPS: list[DemoStep] = [
    identity_teams,
    identity_users,
    routing_queue,
    routing_rules,
    routing_agents,
    leads_seed,
    routing_your_agent,
]


def _step_title(step: DemoStep) -> str:
    return (step.__doc__ or step.__name__).strip().splitlines()[0]


async def load_demo_data(settings: Settings, steps: list[DemoStep] | None = None) -> DemoState:
    """Run every demo step, each in its own transaction, with a progress bar."""
    state = DemoState()
    steps = DEMO_STEPS if steps is None else steps
    with progress() as bar:
        task = bar.add_task("Loading demo data", total=len(steps))
        for step in steps:
            bar.update(task, description=_step_title(step))

            async def work(session: AsyncSession, step: DemoStep = step) -> None:
                await step(session, state)

            await in_transaction(settings, work)
            bar.advance(task)
        bar.update(task, description="Delivering events")
        await deliver_events(settings)
    return state


async def deliver_events(settings: Settings) -> int:
    """Hand the steps' events to their consumers now (e.g. leads learn their assignee), so the
    data is whole even with --no-serve; a server would otherwise do it on start."""
    database = Database(settings.resolved_database_url, pool_size=1, read_pool_size=1)
    try:
        return await Dispatcher(database).drain()
    finally:
        await database.dispose()


def reset_database(settings: Settings) -> None:
    if settings.environment == "production":
        fail("refusing to reset a database with ALLOT_ENVIRONMENT=production")
    url = settings.resolved_database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(parsed.database + suffix).unlink(missing_ok=True)
        console.print("Demo reset: SQLite database file removed.")
        return
    if migrations.current(url) is not None:
        apply_migrations(url, "base", downgrade=True)
    console.print("Demo reset: every table dropped (downgraded to base).")


def print_welcome(state: DemoState, host: str, port: int, *, floor: bool) -> None:
    if state.created:
        console.print(f"Demo data loaded: {len(state.created)} new records.")
    else:
        console.print("Demo data already present; nothing added.")
    base = f"http://{host}:{port}"
    console.print(f"\nSign in at {base}/login")
    console.print(f"  email:    {ADMIN_EMAIL}")
    console.print(f"  password: {DEMO_PASSWORD}")
    others = ", ".join(person.email for person in USERS if person.email != ADMIN_EMAIL)
    console.print(f"  (same password for {others})")
    human = next(person.name for person in USERS if person.email == HUMAN_OPERATOR_EMAIL)
    console.print(
        "\nWhat to look at:\n"
        f"  {base}/board  the floor, live: queue «{LOANS_QUEUE.name}» (waiting, offered, "
        "assigned) and each agent's status and load (as the admin or manager@demo.allot)\n"
        f"  {base}/leads  every lead with its customer, amount, status and timeline\n"
        f"  {base}/inbox  an operator's desk: sign in as {HUMAN_OPERATOR_EMAIL} ({human}) in "
        "another browser or a private window; offers arrive with a 60-second countdown to "
        "accept or decline (if your status shows Offline, press Available)\n"
        f"  {base}/routing/rules  the routing rules (as the admin or manager): edit version 1, "
        "dry-run it on a lead, then\n"
        f"  {base}/routing/simulate  replay the last days with your version next to what "
        "happened, and activate it; each lead's page then says why it went where it went\n"
        f"  {base}/leads/analytics  which source converts best and who answers slowest"
    )
    console.print(
        f"\nRouting: rule set version 1 sends every lead to the queue «{LOANS_QUEUE.name}», which "
        "offers it to the least loaded available operator, one at a time; an offer not "
        f"answered in 60 s, or declined, goes to the next one. «{BIG_LOANS_QUEUE.name}» "
        "(operators with the big_loans skill) waits for a rule that sends leads there."
    )
    if floor:
        simulated = ", ".join(p.name for p in USERS if p.email in SIMULATED_EMAILS)
        console.print(
            f"The floor is simulated: a new lead every 3-8 s, and {simulated} answer their "
            f"offers and work their leads to won or lost. {human} is yours. "
            "(`allot demo --no-floor` serves without the simulation.)"
        )


def serve_demo(host: str, port: int) -> None:
    """Serve with the demo floor running in the server's event loop (the schema is current:
    the demo command has just migrated it)."""
    app = create_app(load_settings())
    install_floor(app, DemoFloor(app.state.database, SIMULATED_EMAILS))
    console.print(f"Allot is serving on http://{host}:{port}/ (Ctrl+C stops it).")
    uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=True)


def demo(
    reset: Annotated[bool, typer.Option(help="Start from an empty database")] = False,
    serve: Annotated[bool, typer.Option(help="Start serving after loading the data")] = True,
    floor: Annotated[
        bool, typer.Option(help="Simulate arriving leads and working operators while serving")
    ] = True,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Load demo data (idempotently) and serve Allot with a live, simulated floor."""
    settings = load_settings()
    with user_errors():
        if reset:
            reset_database(settings)
        upgrade_to(settings.resolved_database_url)
    state = run(load_demo_data(settings))
    print_welcome(state, host, port, floor=serve and floor)
    if serve and floor:
        serve_demo(host, port)
    elif serve:
        run_server(host=host, port=port, reload=False, migrate=True)
