"""Router factories: every context's routers commit through the request unit of work."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

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


# What `include_flat` carries over from each route as FastAPI resolved it under its routers.
_ROUTE_OPTIONS = (
    "response_model", "status_code", "tags", "dependencies", "summary", "description",
    "response_description", "responses", "deprecated", "methods", "operation_id",
    "response_model_include", "response_model_exclude", "response_model_by_alias",
    "response_model_exclude_unset", "response_model_exclude_defaults",
    "response_model_exclude_none", "include_in_schema", "response_class", "name", "callbacks",
    "openapi_extra", "generate_unique_id_function", "strict_content_type", "max_body_size",
)  # fmt: skip


def include_flat(app: FastAPI, router: APIRouter) -> None:
    """`app.include_router(router)`, with each of its routes (nested routers included) added to
    the app's own route list, in the same order and with the same options.

    FastAPI 0.165 keeps an included router as one lazy entry: every request walks it (and every
    router nested in it) and matches the chosen branch twice, which cost ≈90 µs a request for
    `POST /api/v1/leads`. Flat routes are matched once each, as a plain route list is. The
    OpenAPI document is the same (a test compares it). Routers given form limits, a body size
    limit or startup/shutdown handlers of their own are included the ordinary way (ours have
    none: the middleware enforces the body limit, `create_app`'s lifespan starts everything).
    A router's own `lifespan=` is not carried over: give the app's lifespan the work instead."""
    contexts = list(iter_route_contexts(router.routes))
    plain = (
        router.form_limits
        or router.max_body_size is not None
        or router.on_startup
        or router.on_shutdown
    )
    if plain or not all(isinstance(c.original_route, APIRoute) for c in contexts):
        app.include_router(router)
        return
    for context in contexts:
        route = context.original_route
        assert isinstance(route, APIRoute)
        assert context.path
        assert context.endpoint
        app.router.add_api_route(
            context.path,
            context.endpoint,
            route_class_override=type(route),
            form_limits=route.form_limits or None,
            **{option: getattr(context, option) for option in _ROUTE_OPTIONS},
        )


# How many leading path segments the route index keys on ("/api/v1/leads" -> api, v1, leads).
_INDEX_DEPTH = 3


class RouteIndex(BaseRoute):
    """Stands in the app's route list for a run of consecutive routes and matches a request
    against only those that could match its path, in their order: what the run alone would
    answer (the first full match, else the first route matching all but the method), at a cost
    that grows with the routes sharing the path's first segments, not with all of them.

    A route can match a path only if the path starts with the route's literal prefix (its path
    up to the first parameter), so only if the path's first segments are the complete segments
    of that prefix. Routes are keyed on those (up to `_INDEX_DEPTH`); a request is compared
    with the routes whose key is a prefix of its own first segments. Scanning the app's ≈110
    routes one by one cost ≈40 µs for `POST /api/v1/leads` (the 45th), more for the pages
    listed after every API route."""

    def __init__(self, routes: Iterable[APIRoute]) -> None:
        self.routes = list(routes)
        keys = [_route_key(route) for route in self.routes]
        self._candidates = {
            key: [
                route
                for route, own in zip(self.routes, keys, strict=True)
                if key[: len(own)] == own
            ]
            for key in set(keys)
        }

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        parts = tuple(get_route_path(scope).split("/", _INDEX_DEPTH + 1)[1 : _INDEX_DEPTH + 1])
        for length in range(len(parts), -1, -1):
            candidates = self._candidates.get(parts[:length])
            if candidates is not None:
                break
        else:
            return Match.NONE, {}
        partial: Scope | None = None
        for route in candidates:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return match, child_scope
            if match is Match.PARTIAL and partial is None:
                partial = child_scope
        if partial is not None:
            return Match.PARTIAL, partial
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The router calls this after `matches`, with the chosen route's child scope applied:
        # `scope["route"]` is the route (APIRoute.matches puts itself there).
        await scope["route"].handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


def _route_key(route: APIRoute) -> tuple[str, ...]:
    literal, parameter, _ = route.path.partition("{")
    segments = literal.split("/")[1:]
    if parameter:  # the last segment goes on past the literal part: not complete
        segments = segments[:-1]
    return tuple(segments[:_INDEX_DEPTH])


def index_routes(app: FastAPI) -> None:
    """Replaces each run of consecutive FastAPI routes in the app's route list by one
    `RouteIndex` (routes added later are appended after it, as before). `expand_routes` gives
    the routes back, for the OpenAPI document."""
    indexed: list[BaseRoute] = []
    run: list[APIRoute] = []
    for route in [*app.router.routes, None]:
        if isinstance(route, APIRoute):
            run.append(route)
            continue
        if run:
            indexed.append(RouteIndex(run) if len(run) > 1 else run[0])
            run = []
        if route is not None:
            indexed.append(route)
    app.router.routes[:] = indexed


def expand_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        if isinstance(route, RouteIndex):
            yield from route.routes
        else:
            yield route
