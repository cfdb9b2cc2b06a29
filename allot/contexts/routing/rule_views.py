"""Routing rule pages: the versions (`routing:read`), the editor with its dry run and activation
(`routing:manage`), and why an item went where it went (`routing:read`).

The editor takes the definition as JSON text and saves it through `rule_service`, as the JSON
API does, so a page and an API call are validated alike. A failed save shows the editor again
with the text as typed and each problem at its place ("filters.1.when: syntax error at position
17 near '='"). The dry run tries the editor's CURRENT text (not a saved version) on a lead picked
by reference or on an item described by its attributes, and writes nothing.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from allot.contexts.routing import ROUTING_MANAGE, ROUTING_READ, explanations, rule_service
from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing.forms import STRATEGY_LABELS, choices, text
from allot.contexts.routing.references import describe_references
from allot.contexts.routing.rule_queries import item_by_id, recent_items
from allot.contexts.routing.rule_schemas import DryRunItem, DryRunRequest, RuleSetCreate
from allot.contexts.routing.rule_texts import (
    ITEM_FIELDS,
    LEAD_ATTRIBUTES,
    RuleError,
    RuleTextInvalid,
    ageing_text,
    definition_views,
    duration_text,
    example_definition,
    filter_view,
    normalise_reference,
    parse_json_object,
    pretty_json,
    pydantic_errors,
    service_errors,
)
from allot.contexts.routing.rules import RuleSetDefinition
from allot.kernel.auth import Principal, require
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.i18n import gettext as _
from allot.kernel.web.flash import flash
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import is_htmx, render
from allot.kernel.web.uow import ReadSession, WriteSession

router = view_router("/routing")
Manager = Annotated[Principal, require(ROUTING_MANAGE)]
Reader = Annotated[Principal, require(ROUTING_READ)]

FORM_FIELDS = ("name", "comment", "definition", "dry_reference", "dry_item")
FORM_INPUTS = ("name", "comment")  # errors shown at their input; the rest next to the editor
EXAMPLE_ITEM = '{"source": "site", "amount_minor": 60000000, "term_months": 12}'


def _zone(request: Request) -> str:
    return str(request.app.state.settings.business_timezone)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _values(form: FormData) -> dict[str, str]:
    values = {name: text(form, name) for name in FORM_FIELDS}
    raw = form.get("definition")  # kept exactly as typed (indentation included)
    values["definition"] = raw if isinstance(raw, str) else ""
    return values


# -- the versions -------------------------------------------------------------------------------
@router.get("/rules")
async def rules_page(request: Request, session: ReadSession, principal: Reader) -> Response:
    rule_sets = await rule_service.list_rule_sets(session)
    context = {
        "rule_sets": rule_sets,
        "active": next((r for r in rule_sets if r.status == "active"), None),
        "can_manage": principal.has(ROUTING_MANAGE),
        "timezone": _zone(request),
    }
    return render(request, "routing/rules.html", context, block="content")


@router.get("/rules/new")
async def new_rules_page(
    request: Request,
    session: ReadSession,
    _manager: Manager,
    based_on: uuid.UUID | None = Query(None, alias="from"),
) -> Response:
    values = dict.fromkeys(FORM_FIELDS, "")
    values["dry_item"] = EXAMPLE_ITEM
    base = None
    if based_on is not None:
        base = await rule_service.get_rule_set(session, based_on)
        values.update(name=base.name, definition=pretty_json(base.definition) + "\n")
    else:
        names = [queue.name for queue in await catalog.active_queues(session)]
        values["definition"] = example_definition(names)
    return await _editor(request, session, values, base=base)


@router.post("/rules")
async def save_rules(request: Request, session: WriteSession, _manager: Manager) -> Response:
    form = await request.form()
    values = _values(form)
    activate = text(form, "action") == "activate"
    data: dict[str, Any] | None = None
    status_code = 422
    try:
        data = parse_json_object(values["definition"], "definition")
        body = _rule_set_body(values, data, activate)
        saved = await rule_service.create_rule_set(session, body)
    except RuleTextInvalid as exc:
        errors = exc.errors
    except (ValidationFailed, Conflict) as exc:
        await session.rollback()
        errors = service_errors(exc, data)
        status_code = 409 if isinstance(exc, Conflict) else 422
    else:
        if saved.status == "active":
            message = _(
                "Version %(version)s is saved and active: new items are routed by it.",
                version=saved.version,
            )
        else:
            message = _("Version %(version)s is saved as a draft.", version=saved.version)
        flash(request, message)
        return _see_other("/routing/rules")
    return await _editor(request, session, values, errors, status_code=status_code)


def _rule_set_body(values: dict[str, str], data: dict[str, Any], activate: bool) -> RuleSetCreate:
    try:
        return RuleSetCreate.model_validate(
            {
                "name": values["name"],
                "comment": values["comment"] or None,
                "definition": data,
                "activate": activate,
            }
        )
    except ValidationError as exc:
        raise RuleTextInvalid(pydantic_errors(exc, prefix="definition.")) from exc


@router.get("/rules/{rule_set_id}")
async def rule_set_page(
    request: Request, rule_set_id: uuid.UUID, session: ReadSession, principal: Reader
) -> Response:
    rule_set = await rule_service.get_rule_set(session, rule_set_id)
    definition = RuleSetDefinition.model_validate(rule_set.definition)
    context = {
        "rule_set": rule_set,
        "filters": definition_views(definition),
        "default_ttl": duration_text(definition.ttl_seconds) if definition.ttl_seconds else None,
        "ageing": ageing_text(definition),
        "raw": pretty_json(rule_set.definition),
        "can_manage": principal.has(ROUTING_MANAGE),
        "timezone": _zone(request),
    }
    return render(request, "routing/rules_view.html", context, block="content")


@router.post("/rules/{rule_set_id}/activate")
async def activate_rules(
    request: Request, rule_set_id: uuid.UUID, session: WriteSession, _manager: Manager
) -> Response:
    try:
        rule_set = await rule_service.activate_rule_set(session, rule_set_id)
    except ValidationFailed as exc:
        await session.rollback()
        problems = "; ".join(f"{e.path}: {e.message}" for e in service_errors(exc))
        flash(
            request, _("This version cannot be activated: %(problems)s", problems=problems), "error"
        )
    else:
        flash(
            request,
            _(
                "Version %(version)s is active: new items are routed by it.",
                version=rule_set.version,
            ),
        )
    return _see_other("/routing/rules")


# -- the editor and its dry run -----------------------------------------------------------------
async def _editor(
    request: Request,
    session: AsyncSession,
    values: dict[str, str],
    errors: list[RuleError] | None = None,
    *,
    base: Any = None,
    dry: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    errors = errors or []
    queues = await catalog.active_queues(session)
    recent = await recent_items(session)
    summaries = await describe_references(session, [item.reference for item in recent])
    seen = sorted({key for item in recent for key in item.attributes} - set(LEAD_ATTRIBUTES))
    strategies = dict(choices(STRATEGY_LABELS))
    context = {
        "values": values,
        "base": base,
        "field_errors": {e.path: e.message for e in errors if e.path in FORM_INPUTS},
        "definition_errors": [e for e in errors if e.path not in FORM_INPUTS],
        "queues": [
            {
                "name": q.name,
                "kinds": ", ".join(q.work_kinds),
                "strategy": strategies.get(q.strategy, q.strategy),
            }
            for q in queues
        ],
        "item_fields": ITEM_FIELDS,
        "attributes": [*LEAD_ATTRIBUTES, *seen],
        "recent": [{"item": item, "summary": summaries.get(item.reference)} for item in recent],
        "dry": dry,
        "timezone": _zone(request),
    }
    return render(
        request, "routing/rules_form.html", context, block="content", status_code=status_code
    )


@router.post("/rules/dry-run")
async def dry_run(request: Request, session: ReadSession, _manager: Manager) -> Response:
    """The dry-run panel for htmx (always 200, so htmx swaps it in, errors included); the whole
    editor with the result for a browser without JavaScript."""
    form = await request.form()
    values = _values(form)
    picked = text(form, "dry_pick")
    if picked:
        values["dry_reference"] = picked
    dry = await _try(session, values)
    if is_htmx(request):
        return render(request, "routing/rules_form.html", {"dry": dry}, block="dry_run")
    return await _editor(request, session, values, dry=dry)


async def _try(session: AsyncSession, values: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] | None = None
    reference = normalise_reference(values["dry_reference"])
    try:
        data = parse_json_object(values["definition"], "definition")
        try:
            definition = RuleSetDefinition.model_validate(data)
        except ValidationError as exc:
            raise RuleTextInvalid(pydantic_errors(exc)) from exc
        item = None if reference else _described_item(values["dry_item"])
        body = DryRunRequest(definition=definition, reference=reference or None, item=item)
        result = await rule_service.dry_run(session, body)
    except RuleTextInvalid as exc:
        return {"errors": exc.errors}
    except ValidationFailed as exc:
        return {"errors": service_errors(exc, data)}
    matched = next((f["index"] for f in result["filters"] if f["matched"]), None)
    summary = None
    if reference:
        summary = (await describe_references(session, [reference])).get(reference)
    strategy = result["strategy"]
    return {
        "errors": [],
        "result": result,
        "reference": reference,
        "summary": summary,
        "item": None if reference else item,
        "matched": filter_view(definition, matched) if matched is not None else None,
        "ttl": duration_text(result["ttl_seconds"]) if result["ttl_seconds"] else None,
        "ageing": ageing_text(definition),
        "strategy": dict(choices(STRATEGY_LABELS)).get(strategy, strategy) if strategy else None,
    }


def _described_item(raw: str) -> DryRunItem:
    """{"source": "site", "amount_minor": 100} -> an item; kind, priority and weight, when
    given, are the item's own fields, the rest its attributes."""
    if not raw.strip():
        raise RuleTextInvalid(
            [
                RuleError(
                    "item", _("Give a lead's reference or describe an item to try the rules on.")
                )
            ]
        )
    data = parse_json_object(raw, "item")
    own = {key: data.pop(key) for key in ITEM_FIELDS if key in data}
    try:
        return DryRunItem.model_validate({**own, "attributes": data})
    except ValidationError as exc:
        raise RuleTextInvalid(
            [RuleError(f"item.{e.path}", e.message) for e in pydantic_errors(exc)]
        ) from exc


# -- why an item went where it went -------------------------------------------------------------
@router.get("/items/{item_id}/why")
async def item_why_page(
    request: Request, item_id: uuid.UUID, session: ReadSession, _reader: Reader
) -> Response:
    item = await item_by_id(session, item_id)
    if item is None:
        raise NotFound(detail="No such work item")
    summary = (await describe_references(session, [item.reference])).get(item.reference)
    context = {
        "item": item,
        "summary": summary,
        "decisions": await explanations.decisions_for(session, item.id),
        "timezone": _zone(request),
    }
    return render(request, "routing/item_why.html", context, block="content")
