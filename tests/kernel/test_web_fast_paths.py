"""The request path's shortcuts (kernel/web/routers.py, middleware.py, shell.py, app.py) change
its cost, never its outcome: a request reaches the route a plain scan of FastAPI's own
`include_router` composition would give it, the API is documented the same, and the outer
layers answer as before."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Match

from allot.app import create_app, installed_contexts, native_telemetry
from allot.kernel.config import Settings
from allot.kernel.web import docs, health
from allot.kernel.web.routers import RouteIndex, api_router, expand_routes, include_flat


@pytest.fixture(scope="module")
def bare_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real app, never started (routing and the schema need no database)."""
    directory: Path = tmp_path_factory.mktemp("app")
    return create_app(
        Settings(
            environment="test",
            data_dir=directory,
            database_url=f"sqlite+aiosqlite:///{directory / 'unused.sqlite3'}",
            secret_key="test-secret-key-not-for-production",  # type: ignore[arg-type]
            run_background_workers=False,
        ),
        run_background=False,
    )


def _plain_app() -> FastAPI:
    """What create_app composed before: every router included the ordinary way, same order."""
    plain = FastAPI()
    plain.include_router(health.router)
    plain.include_router(docs.router)
    for parts in (("api", "import_api"), ("views",)):
        for context in installed_contexts():
            for part in parts:
                name = f"allot.contexts.{context}.{part}"
                if importlib.util.find_spec(name) is not None:
                    plain.include_router(importlib.import_module(name).router)
    return plain


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def _choose(routes: list[BaseRoute], scope: dict[str, Any]) -> tuple[Match, Any]:
    """How a router picks: the first full match, else the first partial (method) match."""
    partial = None
    for route in routes:
        match, child_scope = route.matches(dict(scope))
        chosen = child_scope.get("route", route)
        if match is Match.FULL:
            return match, chosen
        if match is Match.PARTIAL and partial is None:
            partial = chosen
    return (Match.PARTIAL, partial) if partial is not None else (Match.NONE, None)


def _signature(route: Any) -> tuple[Any, ...]:
    return (route.path, sorted(route.methods or ()), route.name)


def test_the_route_list_is_flat_and_indexed(bare_app):
    kinds = [type(route).__name__ for route in bare_app.router.routes]
    assert "_IncludedRouter" not in kinds
    assert kinds.count("RouteIndex") >= 1


def test_flat_routes_are_the_routes_include_router_would_give_in_the_same_order(bare_app):
    plain = _plain_app()
    ours = [r for r in expand_routes(bare_app.router.routes) if isinstance(r, APIRoute)]
    theirs = [context for context in _leaf_contexts(plain) if isinstance(context, APIRoute)]
    assert [_signature(r) for r in ours] == [_signature(r) for r in theirs]
    for route in ours:
        assert route.dependency_overrides_provider is bare_app  # as include_router sets it


def _leaf_contexts(app: FastAPI) -> list[Any]:
    from fastapi.routing import iter_route_contexts

    return [context.original_route for context in iter_route_contexts(app.router.routes)]


def test_the_openapi_document_is_what_include_router_gives(bare_app):
    plain = _plain_app()
    theirs = get_openapi(title="t", version="1", routes=plain.routes)
    ours = bare_app.openapi()
    assert ours["paths"] == theirs["paths"]
    ours_schemas = dict(ours["components"]["schemas"])
    assert ours_schemas.pop("Problem")
    assert ours_schemas == theirs["components"]["schemas"]


def test_include_flat_leaves_routers_with_their_own_body_limit_included():
    router = APIRouter(max_body_size=10)

    @router.get("/x")
    async def x() -> dict[str, str]:
        return {}

    app = FastAPI()
    include_flat(app, router)
    assert [type(route).__name__ for route in app.router.routes][-1] == "_IncludedRouter"


# Paths made of the segments routes use, with ids, odd words and trailing slashes mixed in.
_SEGMENTS = st.sampled_from(
    ["api", "v1", "leads", "lead-sla", "lead-pipeline", "lead-imports", "queues", "agents",
     "users", "me", "tokens", "static", "login", "admin", "routing", "customers", "import",
     "status", "notes", "timeline", "healthz", "metrics", "docs", "openapi.json", "x", "",
     "0193f4e8-8c1a-7b3e-9f00-6d2c1b0a9e11", "42"]
)  # fmt: skip


@given(
    segments=st.lists(st.one_of(_SEGMENTS, st.text(min_size=1, max_size=6)), max_size=6),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
)
@settings(max_examples=400, deadline=None)
def test_the_index_picks_what_a_plain_scan_picks(bare_app, segments, method):
    scope = _scope(method, "/" + "/".join(segments))
    flat = list(expand_routes(bare_app.router.routes))
    assert _choose(bare_app.router.routes, scope) == _choose(flat, scope)


def test_every_route_is_reached_through_the_index(bare_app):
    flat = list(expand_routes(bare_app.router.routes))
    for route in flat:
        if not isinstance(route, APIRoute):
            continue
        path = route.path_format.replace("{", "").replace("}", "")
        for method in sorted(route.methods):
            scope = _scope(method, path)
            assert _choose(bare_app.router.routes, scope) == _choose(flat, scope)


def test_an_index_answers_url_path_for_and_refuses_websockets():
    router = api_router("/things", "things")

    @router.get("/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @router.get("")
    async def things() -> list[str]:
        return []

    index = RouteIndex([r for r in router.routes if isinstance(r, APIRoute)])
    assert str(index.url_path_for("thing", thing_id="7")) == "/api/v1/things/7"
    assert index.matches({"type": "websocket", "path": "/api/v1/things"}) == (Match.NONE, {})


async def test_unusual_requests_get_the_answers_they_always_got(client):
    cases = {
        ("DELETE", "/api/v1/leads"): (405, "POST"),
        ("PUT", "/api/v1/lead-sla"): (405, "GET"),
        ("GET", "/api/v1/leads/"): (307, None),
        ("GET", "/api/v1/nothing-here"): (404, None),
    }
    for (method, path), (status, allow) in cases.items():
        response = await client.request(method, path)
        assert response.status_code == status, (method, path)
        assert response.headers.get("allow") == allow
    redirected = await client.get("/api/v1/leads/")
    assert redirected.headers["location"].endswith("/api/v1/leads")


async def test_a_refused_body_carries_the_request_id_and_counts(client, app):
    limit = app.state.settings.max_request_body_bytes
    response = await client.post(
        "/api/v1/leads", content=b"x" * (limit + 1), headers={"X-Request-Id": "big-1"}
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"] == "big-1"
    metrics = (await client.get("/metrics")).text
    assert 'allot_http_requests_total{method="POST",route="unmatched",status="413"}' in metrics


async def test_an_api_call_gets_no_cookie(client, database):
    from allot.contexts import identity

    async with database.transaction() as session:
        user = await identity.create_user(
            session, email="api@example.com", password="long-enough-password", roles=["admin"]
        )
        _, token = await identity.issue_token(session, user_id=user.id, name="t")
    response = await client.get("/api/v1/leads", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers


def test_fastapi_telemetry_is_off_unless_opentelemetry_is_set_up(monkeypatch):
    from opentelemetry import trace

    assert native_telemetry() == {"tracing": False, "metrics": False, "logs": False}
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert native_telemetry() == {}
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE")
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert native_telemetry() == {}
