"""Cards typed in by people: creating one by hand, editing kind, name, consent and contacts.

Unlike intake these never reuse or silently skip: a contact that belongs to another card is a
Conflict naming the field and that card, so the person can open it or merge the two.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, FieldError, ValidationFailed

from . import repository
from .models import EXTERNAL_ID_MAX_LENGTH, Contact, Customer, ExternalId
from .normalize import (
    check_kind,
    clean_name,
    clean_source,
    normalize_email,
    normalize_phone,
    search_form,
)
from .repository import ContactKey
from .schemas import CustomerInfo
from .service import (
    editable_card,
    field_path,
    info_of,
    new_card,
    record_created,
    record_updated,
    set_consent,
)


def _normalized(values: Iterable[str], kind: str, prefix: str) -> dict[str, str]:
    """Normalized value -> the field it came from (`body.phones.1`); duplicates dropped."""
    normalize = normalize_phone if kind == "phone" else normalize_email
    field = field_path(prefix, f"{kind}s")
    result: dict[str, str] = {}
    for i, raw in enumerate(values):
        result.setdefault(normalize(raw, f"{field}.{i}"), f"{field}.{i}")
    return result


def _cleaned_external_ids(
    pairs: Iterable[tuple[str, str]], prefix: str
) -> dict[tuple[str, str], str]:
    field = field_path(prefix, "external_ids")
    result: dict[tuple[str, str], str] = {}
    for i, (source, external_id) in enumerate(pairs):
        key = (clean_source(source, f"{field}.{i}.source"), external_id.strip())
        if not key[1] or len(key[1]) > EXTERNAL_ID_MAX_LENGTH:
            message = f"1 to {EXTERNAL_ID_MAX_LENGTH} characters"
            raise ValidationFailed.on(f"{field}.{i}.external_id", message)
        result.setdefault(key, f"{field}.{i}")
    return result


def _taken(
    owners: dict[Any, uuid.UUID], fields: dict[Any, str], customer_id: uuid.UUID | None
) -> Conflict | None:
    foreign = {key: owner for key, owner in owners.items() if owner != customer_id}
    if not foreign:
        return None
    errors = [FieldError(fields[key], "Belongs to another customer", "taken") for key in foreign]
    return Conflict(
        detail="A contact belongs to another customer; open that card or merge the two",
        errors=errors,
        extra={"customer_id": str(next(iter(foreign.values())))},
    )


async def create_customer(
    session: AsyncSession,
    *,
    kind: str = "person",
    name: str | None = None,
    phones: Iterable[str] = (),
    emails: Iterable[str] = (),
    external_ids: Iterable[tuple[str, str]] = (),
    consent: bool | None = None,
    source: str = "manual",
    field_prefix: str = "body",
) -> CustomerInfo:
    """A card typed in by a person. Unlike intake it never reuses a card: a contact that
    already belongs to one is a Conflict naming the field and the card."""
    source = clean_source(source, field_path(field_prefix, "source"))
    kind = check_kind(kind, field_path(field_prefix, "kind"))
    name = clean_name(name, field_path(field_prefix, "name"))
    fields: dict[Any, str] = {}
    for contact_kind, values in (("phone", phones), ("email", emails)):
        for value, field in _normalized(values, contact_kind, field_prefix).items():
            fields[(contact_kind, value)] = field
    cleaned_externals = _cleaned_external_ids(external_ids, field_prefix)
    externals = list(cleaned_externals)
    for key, field in cleaned_externals.items():
        fields[("external", *key)] = field
    if not fields and name is None:
        raise ValidationFailed.on(
            field_path(field_prefix, "name"), "Give a name or at least one contact", "required"
        )
    contacts: list[ContactKey] = [k for k in fields if k[0] != "external"]
    owners: dict[Any, uuid.UUID] = dict(await repository.contact_owners(session, contacts))
    for key, owner in (await repository.external_id_owners(session, externals)).items():
        owners[("external", *key)] = owner
    if conflict := _taken(owners, fields, None):
        raise conflict
    card = new_card(kind=kind, name=name, source=source, consent=consent)
    session.add(card)
    await session.flush()
    now = utcnow()
    for key, field in fields.items():
        model: type[Contact | ExternalId]
        if key[0] == "external":
            model, values = ExternalId, {"source": key[1], "external_id": key[2]}
        else:
            model, values = Contact, {"kind": key[0], "value": key[1], "source": source}
        row = {"customer_id": card.id, "created_at": now, **values}
        if not await repository.insert_ignoring_conflict(session, model, row):
            # A concurrent intake claimed it between our check and insert.
            raise Conflict(
                detail="A contact was just taken by another customer",
                errors=[FieldError(field, "Belongs to another customer", "taken")],
            )
    await record_created(session, card, contacts, externals)
    return await info_of(session, card)


async def update_customer(
    session: AsyncSession,
    customer_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    source: str = "manual",
    field_prefix: str = "body",
) -> CustomerInfo:
    """Change what `changes` names (kind, name, consent; phones/emails replace the lists).

    PATCH semantics: a key left out keeps its value; `name: None` removes the name and
    `phones: None` / `emails: None` remove every phone / e-mail, like an empty list. `kind` and
    `consent` cannot be cleared (None keeps them; the API refuses null for them)."""
    card = await editable_card(session, customer_id)
    contacts = await repository.contacts_of(session, [card.id])
    before = _editable_snapshot(card, contacts)
    if changes.get("kind") is not None:
        card.kind = check_kind(changes["kind"], field_path(field_prefix, "kind"))
    if "name" in changes:
        card.name = clean_name(changes["name"], field_path(field_prefix, "name"))
        card.search_name = search_form(card.name)
    if changes.get("consent") is not None and changes["consent"] != card.consent:
        await set_consent(session, card, changes["consent"], source)
    after = {**before, "kind": card.kind, "name": card.name, "consent": card.consent}
    for kind in ("phone", "email"):
        if f"{kind}s" not in changes:
            continue
        wanted = _normalized(changes[f"{kind}s"] or (), kind, field_prefix)
        current = {row.value: row.id for row in contacts if row.kind == kind}
        added = [v for v in wanted if v not in current]
        fields = {(kind, v): wanted[v] for v in added}
        if conflict := _taken(await repository.contact_owners(session, fields), fields, card.id):
            raise conflict
        await repository.delete_contacts(
            session, [i for v, i in current.items() if v not in wanted]
        )
        for value in added:
            row = {
                "customer_id": card.id,
                "kind": kind,
                "value": value,
                "source": source,
                "created_at": utcnow(),
            }
            if not await repository.insert_ignoring_conflict(session, Contact, row):
                raise Conflict(
                    detail="A contact was just taken by another customer",
                    errors=[
                        FieldError(fields[(kind, value)], "Belongs to another customer", "taken")
                    ],
                )
        after[f"{kind}s"] = sorted(wanted)
    changed = {k for k in after if after[k] != before[k]}
    if changed:
        await record_updated(
            session, card.id, {k: before[k] for k in changed}, {k: after[k] for k in changed}
        )
    await session.flush()
    return await info_of(session, card)


def _editable_snapshot(card: Customer, contacts: Sequence[Any]) -> dict[str, Any]:
    return {
        "kind": card.kind,
        "name": card.name,
        "consent": card.consent,
        "phones": sorted(row.value for row in contacts if row.kind == "phone"),
        "emails": sorted(row.value for row in contacts if row.kind == "email"),
    }
