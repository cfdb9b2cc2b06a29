"""JSON API: routing rule sets, the dry run, and the decision log
(`/api/v1/routing/rule-sets`, `/api/v1/routing/dry-run`, `/api/v1/routing/decisions`)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Query

from allot.contexts.routing import ROUTING_MANAGE, ROUTING_READ, explanations, rule_service
from allot.contexts.routing.models import RuleSet
from allot.contexts.routing.rule_schemas import (
    DecisionOut,
    DryRunOut,
    DryRunRequest,
    RuleSetCreate,
    RuleSetOut,
)
from allot.kernel.auth import Principal, require
from allot.kernel.errors import NotFound, ValidationFailed
from allot.kernel.idempotency import IdempotencyKey
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession, WriteSession

rule_sets = api_router("/routing/rule-sets", "routing rules")
decisions = api_router("/routing", "routing rules")


@rule_sets.get("", response_model=list[RuleSetOut], summary="Rule set versions, newest first")
async def list_rule_sets(
    session: ReadSession, principal: Principal = require(ROUTING_READ)
) -> list[RuleSet]:
    return await rule_service.list_rule_sets(session)


@rule_sets.post("", status_code=201, response_model=RuleSetOut, summary="Save a rule set version")
async def create_rule_set(
    body: RuleSetCreate,
    session: WriteSession,
    _idem: IdempotencyKey,
    principal: Principal = require(ROUTING_MANAGE),
) -> RuleSet:
    """Validated on save: expressions must parse (errors name the filter and the position,
    e.g. `body.definition.filters.1.when: Syntax error at position 12 near '='`) and every
    named queue must exist and be active. Saved as a draft unless `activate` is true."""
    return await rule_service.create_rule_set(session, body)


@rule_sets.get("/{rule_set_id}", response_model=RuleSetOut, summary="A rule set version")
async def get_rule_set(
    rule_set_id: uuid.UUID, session: ReadSession, principal: Principal = require(ROUTING_READ)
) -> RuleSet:
    return await rule_service.get_rule_set(session, rule_set_id)


@rule_sets.post(
    "/{rule_set_id}/activate", response_model=RuleSetOut, summary="Route new items by this one"
)
async def activate_rule_set(
    rule_set_id: uuid.UUID, session: WriteSession, principal: Principal = require(ROUTING_MANAGE)
) -> RuleSet:
    """The previously active version is retired. Items already placed keep the version they
    were placed by for their remaining time steps."""
    return await rule_service.activate_rule_set(session, rule_set_id)


@decisions.post("/dry-run", response_model=DryRunOut, summary="What the rules would do")
async def dry_run(
    body: DryRunRequest, session: ReadSession, principal: Principal = require(ROUTING_READ)
) -> dict[str, Any]:
    """Try a rule set (pasted, a stored version, or the active one when neither is given) on an
    item (described, or an existing one by `reference`): which filter matches, which queue, who
    would get it now and why, who is left out and why. Nothing is written."""
    return await rule_service.dry_run(session, body)


@decisions.get(
    "/decisions", response_model=list[DecisionOut], summary="Why an item went where it went"
)
async def list_decisions(
    session: ReadSession,
    item_id: uuid.UUID | None = Query(None, description="The work item's id"),
    reference: str | None = Query(None, max_length=255, description="Or its reference"),
    principal: Principal = require(ROUTING_READ),
) -> list[dict[str, Any]]:
    """Every routing decision about the item, oldest first: the candidates as ranked with the
    values compared, the tie-break, who was left out with reasons (`offline`, `away`,
    `on_leave`, `off_schedule`, `deactivated`, `quota`, `over_capacity`, `declined_before`,
    `busy_elsewhere`), the rule and the policy applied."""
    if (item_id is None) == (reference is None):
        raise ValidationFailed.on("query.item_id", "Give exactly one of item_id and reference")
    if reference is not None:
        item_id = await explanations.item_id_of(session, reference)
        if item_id is None:
            raise NotFound(detail="No work item with this reference")
    assert item_id is not None
    return await explanations.decisions_for(session, item_id)
