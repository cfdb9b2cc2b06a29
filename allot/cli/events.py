"""`allot events dlq list | show | replay | purge`: the events consumers gave up on.

With `ALLOT_BROKER_URL` set they are the dead-letter queues `<ns>.<group>.dead` (reading gives
every message back; a replay removes a dead letter only after the broker confirmed its copy).
Without a broker they are the outbox rows marked `dead` by the in-process dispatcher (a replay
makes them pending again with their attempts reset). docs/event-bus.md explains both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from allot.cli.runtime import (
    console,
    fail,
    load_settings,
    print_rows,
    require_current_schema,
    run,
    user_errors,
)
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database

T = TypeVar("T")

events_app = typer.Typer(help="The event bus.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: events a consumer gave up on.", no_args_is_help=True)
events_app.add_typer(dlq_app, name="dlq")

GroupOption = Annotated[
    str | None, typer.Option("--group", help="One consumer group (e.g. audit); default all")
]


def _groups(group: str | None) -> list[str]:
    from allot.app import load_contexts
    from allot.kernel.events.broker import consumer_groups

    load_contexts()
    return [group] if group else sorted(consumer_groups())


async def _with_queues(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    import aio_pika

    from allot.kernel.events.broker import Topology
    from allot.kernel.events.broker.dead_letters import DeadLetterQueues

    try:
        connection = await aio_pika.connect(settings.broker_url, timeout=10)
    except Exception as exc:
        fail(f"cannot reach the broker ({type(exc).__name__}: {exc})")
    try:
        return await work(DeadLetterQueues(connection, Topology.from_settings(settings)))
    finally:
        await connection.close()


async def _with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    database = Database(settings.resolved_database_url, pool_size=1, read_pool_size=1)
    try:
        async with database.transaction() as session:
            return await work(session)
    finally:
        await database.dispose()


def _event_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        fail(f"{text!r} is not an event id")


def _settings() -> Settings:
    settings = load_settings()
    if not settings.broker_url:
        require_current_schema(settings)
    return settings


@dlq_app.command("list")
def list_dead(
    group: GroupOption = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many")] = 50,
) -> None:
    """The dead letters, oldest first: event, type, consumer, attempts, error."""
    from allot.kernel.events.broker import dead_letters

    settings = _settings()
    if settings.broker_url:
        groups = _groups(group)
        found = run(_with_queues(settings, lambda q: q.peek(groups, limit)))
        print_rows(
            ["Group", "Event", "Type", "Consumer", "Attempts", "Last failure", "Error"],
            [
                [
                    m.group,
                    m.event_id,
                    m.event_type,
                    m.consumer,
                    m.attempts,
                    m.last_failure,
                    _first_line(m.error),
                ]
                for m in found
            ],
        )
        return
    rows = run(_with_session(settings, lambda s: dead_letters.dead_rows(s, group, limit)))
    print_rows(
        ["Event", "Type", "Attempts", "Created", "Error"],
        [
            [
                str(r.id),
                r.type,
                str(r.attempts),
                r.created_at.isoformat(),
                _first_line(r.last_error or ""),
            ]
            for r in rows
        ],
    )


@dlq_app.command("show")
def show(
    event_id: Annotated[str, typer.Argument(help="Event id")], group: GroupOption = None
) -> None:
    """Everything about one dead event: why it failed, its headers and payload."""

    settings = _settings()
    with user_errors():
        wanted = _event_id(event_id)
    if settings.broker_url:
        groups = _groups(group)
        found = run(_with_queues(settings, lambda q: q.show(groups, str(wanted))))
        with user_errors():
            if not found:
                fail(f"no dead letter for event {wanted}")
        for m in found:
            _print_fields(
                {
                    "group": m.group,
                    "event": m.event_id,
                    "type": m.event_type,
                    "consumer": m.consumer,
                    "attempts": m.attempts,
                    "first failure": m.first_failure,
                    "last failure": m.last_failure,
                    "routing key": m.routing_key,
                    "error": m.error,
                    "headers": json.dumps(m.headers, ensure_ascii=False, default=str),
                    "body": json.dumps(m.body, ensure_ascii=False, indent=2, default=str),
                }
            )
        return

    async def one(session: Any) -> Any:
        from allot.kernel.events import OutboxEvent

        return await session.get(OutboxEvent, wanted)

    row = run(_with_session(settings, one))
    with user_errors():
        if row is None or row.status != "dead":
            fail(f"no dead event {wanted}")
    _print_fields(
        {
            "event": str(row.id),
            "type": row.type,
            "aggregate": f"{row.aggregatetype} {row.aggregateid}",
            "attempts": str(row.attempts),
            "created": row.created_at.isoformat(),
            "error": row.last_error or "",
            "headers": json.dumps(row.headers, ensure_ascii=False, default=str),
            "payload": json.dumps(row.payload, ensure_ascii=False, indent=2, default=str),
        }
    )


@dlq_app.command("replay")
def replay(
    event_id: Annotated[str | None, typer.Argument(help="Event id")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter (of --group)")] = False,
    group: GroupOption = None,
) -> None:
    """Send dead letters back to their consumers: one event by id, or --all."""
    from allot.kernel.events.broker import dead_letters

    with user_errors():
        if (event_id is None) == (not all_):
            fail("give an event id or --all (not both)")
        wanted = _event_id(event_id) if event_id is not None else None
    settings = _settings()
    if settings.broker_url:
        groups = _groups(group)
        target = str(wanted) if wanted is not None else None
        count = run(_with_queues(settings, lambda q: q.replay(groups, target)))
    else:
        count = run(_with_session(settings, lambda s: dead_letters.replay_rows(s, wanted, group)))
    with user_errors():
        if wanted is not None and count == 0:
            fail(f"no dead letter for event {wanted}")
    console.print(f"Replayed {count} dead letter(s).")


@dlq_app.command("purge")
def purge(
    group: GroupOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete them")] = False,
) -> None:
    """Delete dead letters for good (of --group, or all)."""
    from allot.kernel.events.broker import dead_letters

    with user_errors():
        if not yes:
            fail("purge deletes dead letters for good: add --yes")
    settings = _settings()
    if settings.broker_url:
        groups = _groups(group)
        count = run(_with_queues(settings, lambda q: q.purge(groups)))
    else:
        count = run(_with_session(settings, lambda s: dead_letters.purge_rows(s, group)))
    console.print(f"Purged {count} dead letter(s).")


def _first_line(text: str, width: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _print_fields(fields: dict[str, str]) -> None:
    for name, value in fields.items():
        typer.echo(f"{name}: {value}")
    typer.echo("")
