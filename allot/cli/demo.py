"""`allot demo`: a working Allot with a realistic Russian-speaking team, in one command.

Demo data is loaded by a list of steps, one or more per context, each an async function given
a session and the shared `DemoState` (ids of what earlier steps made). A context adds its demo
data by appending a step to `DEMO_STEPS`. Steps are idempotent: they look before they create,
so running the demo twice changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

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
from allot.kernel import migrations
from allot.kernel.config import Settings

# Fixed so the printed credentials stay true on every run; only ever used in demo databases.
DEMO_PASSWORD = "allot-demo-2025"  # noqa: S105 (printed to the user on purpose)
ADMIN_EMAIL = "admin@demo.allot"


@dataclass
class DemoState:
    """What the steps made so far, by natural key, for later steps to refer to."""

    user_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by email
    team_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by name
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


DEMO_STEPS: list[DemoStep] = [identity_teams, identity_users]


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
    return state


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


def print_welcome(state: DemoState, host: str, port: int) -> None:
    if state.created:
        console.print(f"Demo data loaded: {len(state.created)} new records.")
    else:
        console.print("Demo data already present; nothing added.")
    console.print(f"\nSign in at http://{host}:{port}/login")
    console.print(f"  email:    {ADMIN_EMAIL}")
    console.print(f"  password: {DEMO_PASSWORD}")
    others = ", ".join(person.email for person in USERS if person.email != ADMIN_EMAIL)
    console.print(f"  (same password for {others})")


def demo(
    reset: Annotated[bool, typer.Option(help="Start from an empty database")] = False,
    serve: Annotated[bool, typer.Option(help="Start serving after loading the data")] = True,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Load demo data (idempotently) and serve Allot."""
    settings = load_settings()
    with user_errors():
        if reset:
            reset_database(settings)
        upgrade_to(settings.resolved_database_url)
    state = run(load_demo_data(settings))
    print_welcome(state, host, port)
    if serve:
        run_server(host=host, port=port, reload=False, migrate=True)
