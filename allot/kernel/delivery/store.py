"""All SQL of the delivery log: enqueue, claim, the outcome marks, and the operator's actions.

Invariants (each kept by the statement next to it):
- D1 one row per key: a repeated enqueue is `INSERT ... ON CONFLICT (key) DO NOTHING`;
- D2 a row is claimed by one runner at a time: the claim moves `next_attempt_at` to the end of
  the lease, so the row is not due for anyone else until then (PostgreSQL: chosen `FOR UPDATE
  SKIP LOCKED`; SQLite: one writer);
- D3 a delivered row is never claimed again (`delivered` is not claimable, and the delivered
  mark is the last write of the row);
- D4 a failure is recorded only over the claim that tried (`attempts` is the claim's token): a
  slow runner whose lease ran out cannot reset another runner's newer claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.clock import utcnow
from allot.kernel.db.engine import Database, insert_ignoring_conflicts, on_commit
from allot.kernel.delivery.channels import OutgoingDelivery, check_payload
from allot.kernel.delivery.models import CLAIMABLE, Delivery
from allot.kernel.ids import new_id

TABLE = cast(Table, Delivery.__table__)
ERROR_LIMIT = 2000
STATUSES = ("pending", "sending", "delivered", "dead")

# Called (synchronously, in the event loop) after a transaction that enqueued a delivery commits:
# the process's runner wakes at once instead of at its next poll.
_enqueue_listeners: list[Callable[[], None]] = []


def add_enqueue_listener(listener: Callable[[], None]) -> None:
    _enqueue_listeners.append(listener)


def remove_enqueue_listener(listener: Callable[[], None]) -> None:
    if listener in _enqueue_listeners:
        _enqueue_listeners.remove(listener)


def _notify() -> None:
    for listener in list(_enqueue_listeners):
        listener()


async def enqueue(
    session: AsyncSession, channel: str, key: str, recipient: str, payload: Mapping[str, Any]
) -> bool:
    """Record a message to send, in the caller's unit of work (a consumer's, with its inbox row):
    nothing goes out unless that transaction commits. Returns False when the key is already in
    the log (a repeat: nothing new is sent, whatever the first one's state).

    `key` names the effect, not the attempt, and holds ids only (it is shown to operators and in
    the email's headers): e.g. `leads.assigned:<lead id>:email:<user id>`."""
    check_payload(channel, recipient, payload)
    if not key or len(key) > 255:
        raise ValueError("a delivery key is 1 to 255 characters")
    now = utcnow()
    values = {
        "id": new_id(), "key": key, "channel": channel, "recipient": recipient,
        "payload": dict(payload), "status": "pending", "attempts": 0, "next_attempt_at": now,
        "claimed_until": None, "created_at": now, "delivered_at": None, "provider_ref": None,
        "last_error": None,
    }  # fmt: skip
    # D1: the unique key decides; on PostgreSQL a concurrent enqueue of the same key waits for
    # the first transaction and then inserts nothing.
    result: Any = await session.execute(insert_ignoring_conflicts(session, TABLE), values)
    if result.rowcount != 1:
        return False
    on_commit(session, _notify)
    return True


async def claim_due(
    database: Database, batch_size: int, lease_seconds: float
) -> list[OutgoingDelivery]:
    """Lease the next due deliveries to this runner and mark them `sending`: one UPDATE ...
    RETURNING. Due: pending rows whose time came, and sending rows whose lease ran out (their
    sender died, or could not record the outcome): those are sent again."""
    now = utcnow()
    lease_end = now + timedelta(seconds=lease_seconds)
    due = (
        select(TABLE.c.id)
        .where(TABLE.c.status.in_(CLAIMABLE), TABLE.c.next_attempt_at <= now)
        .order_by(TABLE.c.next_attempt_at, TABLE.c.id)
        .limit(batch_size)
    )
    if not database.is_sqlite:
        due = due.with_for_update(skip_locked=True)  # D2: another runner's rows are skipped
    claim = (
        update(TABLE)
        .where(TABLE.c.id.in_(due.scalar_subquery()))
        .values(
            status="sending",
            attempts=TABLE.c.attempts + 1,
            claimed_until=lease_end,
            next_attempt_at=lease_end,  # D2: due again only when the lease ran out
        )
        .returning(*TABLE.c)
    )
    async with database.transaction() as session:
        rows = (await session.execute(claim)).all()
    return [
        OutgoingDelivery(
            id=row.id, key=row.key, channel=row.channel, recipient=row.recipient,
            payload=dict(row.payload), attempts=row.attempts, created_at=row.created_at,
        )
        for row in sorted(rows, key=lambda r: (r.created_at, r.id))
    ]  # fmt: skip


async def mark_delivered(database: Database, delivery_id: uuid.UUID, provider_ref: str) -> bool:
    """The provider accepted it. Recorded whatever a later claim did meanwhile (a slow send
    that outlived its lease): the message did go out, and the row must not be sent again."""
    async with database.transaction() as session:
        result: Any = await session.execute(
            update(TABLE)
            .where(TABLE.c.id == delivery_id, TABLE.c.status != "delivered")
            .values(
                status="delivered",
                delivered_at=utcnow(),
                provider_ref=provider_ref[:255],
                claimed_until=None,
            )
        )
    return bool(result.rowcount == 1)


async def mark_failed(
    database: Database,
    delivery: OutgoingDelivery,
    error: str,
    *,
    retry_at: datetime | None,
) -> bool:
    """A try failed: pending again from `retry_at`, or dead when None. D4: only over the claim
    that tried (same `attempts`, still sending)."""
    values: dict[str, Any] = {"last_error": error[:ERROR_LIMIT], "claimed_until": None}
    if retry_at is None:
        values["status"] = "dead"
    else:
        values.update(status="pending", next_attempt_at=retry_at)
    async with database.transaction() as session:
        result: Any = await session.execute(
            update(TABLE)
            .where(
                TABLE.c.id == delivery.id,
                TABLE.c.status == "sending",
                TABLE.c.attempts == delivery.attempts,
            )
            .values(**values)
        )
    return bool(result.rowcount == 1)


# -- the operator's side (CLI) ------------------------------------------------------------------
async def get(session: AsyncSession, key: str) -> Delivery | None:
    found: Delivery | None = (
        await session.execute(select(Delivery).where(Delivery.key == key))
    ).scalar_one_or_none()
    return found


async def list_deliveries(
    session: AsyncSession,
    *,
    status: str | None = None,
    channel: str | None = None,
    limit: int = 50,
) -> Sequence[Delivery]:
    """Newest first."""
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if status:
        query = query.where(Delivery.status == status)
    if channel:
        query = query.where(Delivery.channel == channel)
    return (await session.execute(query)).scalars().all()


async def retry(session: AsyncSession, key: str) -> Delivery | None:
    """A dead delivery back to pending, due now, its attempts counted from 0 again (the error
    that killed it stays in `last_error` until the next try). None: no dead delivery has it."""
    result: Any = await session.execute(
        update(TABLE)
        .where(TABLE.c.key == key, TABLE.c.status == "dead")
        .values(status="pending", attempts=0, next_attempt_at=utcnow(), claimed_until=None)
    )
    if result.rowcount != 1:
        return None
    on_commit(session, _notify)
    return await get(session, key)


async def erase_recipient(session: AsyncSession, recipient: str) -> int:
    """Erasure (152-FZ / GDPR): every delivery to `recipient` loses the address, the message
    and the error text (which may quote them); one not yet delivered is never sent (dead).
    The keys stay, so a repeated enqueue is still recognised. Returns the rows changed."""
    erased = {"recipient": "erased", "payload": {"erased": True}}
    unsent: Any = await session.execute(
        update(TABLE)
        .where(TABLE.c.recipient == recipient, TABLE.c.status != "delivered")
        .values(**erased, status="dead", claimed_until=None,
                last_error="the recipient was erased before delivery")
    )  # fmt: skip
    sent: Any = await session.execute(
        update(TABLE).where(TABLE.c.recipient == recipient).values(**erased, last_error=None)
    )
    return int(unsent.rowcount) + int(sent.rowcount)


async def purge(session: AsyncSession, older_than: datetime) -> int:
    """Delete delivered and dead rows created before `older_than`. Their keys are forgotten:
    an enqueue with one of them afterwards sends again, so the retention must be longer than
    any event can be replayed."""
    result: Any = await session.execute(
        delete(TABLE).where(
            TABLE.c.status.in_(("delivered", "dead")), TABLE.c.created_at < older_than
        )
    )
    return int(result.rowcount)


async def counts(session: AsyncSession) -> dict[str, int]:
    query = select(TABLE.c.status, func.count()).group_by(TABLE.c.status)
    found = {status: int(n) for status, n in (await session.execute(query)).all()}
    return {status: found.get(status, 0) for status in STATUSES}
