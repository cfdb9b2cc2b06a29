"""`allot demo`: a working Allot with a realistic Russian-speaking team, in one command.

Demo data is loaded by a list of steps, one or more per context, each an async function given
a session and the shared `DemoState` (ids of what earlier steps made). A context adds its demo
data by appending a step to `DEMO_STEPS`. Steps are idempotent: they look before they create,
so running the demo twice changes nothing.

The data: two teams and six users (identity), the queues «Займы» and «Крупные займы», rule set
version 1 and four agents (routing), and about 170 loan applications of the last ten days,
worked by the simulated operators in time order and still at every stage of the pipeline
(leads; `demo_history.py` says why in time order). While the demo
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
from allot.cli.demo_floor import DemoFloor, install_floor
from allot.cli.demo_history import play_history
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
from allot.contexts import identity
from allot.contexts.routing import agent_service, queue_service, rule_service
from allot.contexts.routing.rule_schemas import RuleSetCreate
from allot.contexts.routing.rules import Ageing, Filter, RuleSetDefinition
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel import migrations
from allot.kernel.clock import ManualClock, set_clock, utcnow
from allot.kernel.config import Settings
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


# -- leads: the recorded past (allot/cli/demo_history.py) ---------------------------------------
async def leads_seed(session: AsyncSession, state: DemoState) -> None:
    """Leads: loan applications of the last ten days, worked by the simulated operators."""
    await play_history(session, state.created)


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
