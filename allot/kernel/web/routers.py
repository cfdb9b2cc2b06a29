"""Router factories: every context's routers commit through the request unit of work."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from allot.kernel.web.uow import UnitOfWorkRoute

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    for status, description in {
        400: "Bad request (malformed JSON, invalid cursor)",
        401: "Not signed in",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        422: "Validation failed; `errors` names each field",
    }.items()
}


def api_router(prefix: str, tag: str) -> APIRouter:
    """A JSON router under /api/v1 whose endpoints document problem+json errors."""
    return APIRouter(
        prefix=f"/api/v1{prefix}",
        tags=[tag],
        route_class=UnitOfWorkRoute,
        responses=PROBLEM_RESPONSES,
    )


def view_router(prefix: str = "") -> APIRouter:
    """An HTML router (pages and htmx fragments), kept out of the OpenAPI schema."""
    return APIRouter(prefix=prefix, route_class=UnitOfWorkRoute, include_in_schema=False)
