"""`allot deliveries list | show | retry | purge`: the delivery log of email and Telegram
messages (docs/deliveries.md).

Recipients are personal data: they are printed masked (`i***@example.ru`), and so are e-mail
addresses and phone numbers inside a message's text. A retry is audited as done by the CLI.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from allot.cli.runtime import console, fail, load_settings, print_rows, transaction, user_errors
from allot.kernel import pii
from allot.kernel.clock import utcnow
from allot.kernel.delivery import store
from allot.kernel.delivery.channels import CHANNEL_NAMES
from allot.kernel.delivery.models import Delivery

deliveries_app = typer.Typer(
    help="The delivery log: email and Telegram messages Allot sends.", no_args_is_help=True
)


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else ""


def _first_line(text: str | None, width: int = 100) -> str:
    line = text.strip().splitlines()[0] if text and text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


@deliveries_app.command("list")
def list_deliveries(
    status: Annotated[
        str | None, typer.Option(help=f"One status: {', '.join(store.STATUSES)}")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help=f"One channel: {', '.join(CHANNEL_NAMES)}")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many")] = 50,
) -> None:
    """Deliveries, newest first: key, channel, recipient (masked), status, attempts, error."""
    with user_errors():
        if status is not None and status not in store.STATUSES:
            fail(f"--status must be one of {', '.join(store.STATUSES)}")
        if channel is not None and channel not in CHANNEL_NAMES:
            fail(f"--channel must be one of {', '.join(CHANNEL_NAMES)}")
    settings = load_settings()

    async def work(session: AsyncSession) -> list[list[str]]:
        found = await store.list_deliveries(session, status=status, channel=channel, limit=limit)
        return [
            [
                row.key,
                row.channel,
                str(pii.mask_value(row.recipient)),
                row.status,
                str(row.attempts),
                _when(row.created_at),
                _when(row.delivered_at),
                pii.mask_text(_first_line(row.last_error)),
            ]
            for row in found
        ]

    rows = transaction(settings, work)
    header = ["Key", "Channel", "Recipient", "Status", "Attempts", "Created", "Delivered"]
    print_rows([*header, "Error"], rows)


def _fields(row: Delivery) -> dict[str, str]:
    payload = pii.mask_mapping(row.payload)
    return {
        "key": row.key,
        "id": str(row.id),
        "channel": row.channel,
        "recipient": str(pii.mask_value(row.recipient)),
        "status": row.status,
        "attempts": str(row.attempts),
        "created": _when(row.created_at),
        "next attempt": _when(row.next_attempt_at) if row.status == "pending" else "",
        "lease until": _when(row.claimed_until) if row.status == "sending" else "",
        "delivered": _when(row.delivered_at),
        "provider ref": row.provider_ref or "",
        "error": pii.mask_text(row.last_error or ""),
        "payload": json.dumps(payload, ensure_ascii=False, indent=2, default=str),
    }


@deliveries_app.command("show")
def show(key: Annotated[str, typer.Argument(help="The delivery's idempotency key")]) -> None:
    """Everything about one delivery (recipient and personal data in the text masked)."""
    settings = load_settings()

    async def work(session: AsyncSession) -> dict[str, str] | None:
        row = await store.get(session, key)
        return _fields(row) if row is not None else None

    fields = transaction(settings, work)
    with user_errors():
        if fields is None:
            fail(f"no delivery with key {key}")
    for name, value in fields.items():
        typer.echo(f"{name}: {value}")


@deliveries_app.command("retry")
def retry(key: Annotated[str, typer.Argument(help="The dead delivery's key")]) -> None:
    """Send a dead delivery again: pending now, its attempts counted from 0 (audited)."""
    from allot.contexts import audit

    settings = load_settings()

    async def work(session: AsyncSession) -> Delivery | None:
        row = await store.retry(session, key)
        if row is not None:
            await audit.record(
                session,
                action="kernel.delivery.retried",
                object_type="kernel.delivery",
                object_id=row.id,
                before={"status": "dead"},
                after={"status": "pending", "key": row.key, "channel": row.channel},
                summary=f"Delivery {row.key} sent again from the CLI",
            )
        return row

    row = transaction(settings, work)
    with user_errors():
        if row is None:
            fail(f"no dead delivery with key {key}")
    console.print(f"Delivery {key} is pending again; a running worker sends it.")


@deliveries_app.command("purge")
def purge(
    older_than_days: Annotated[
        int, typer.Option("--older-than-days", min=1, help="Created more than N days ago")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Really delete them")] = False,
) -> None:
    """Delete delivered and dead deliveries older than N days (their keys are forgotten).

    An event replayed after the purge would send its message again.
    """
    with user_errors():
        if not yes:
            fail("purge deletes deliveries (and their keys) for good: add --yes")
    settings = load_settings()

    async def work(session: AsyncSession) -> int:
        return await store.purge(session, utcnow() - timedelta(days=older_than_days))

    count = transaction(settings, work)
    console.print(f"Purged {count} delivery(ies).")
