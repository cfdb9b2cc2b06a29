"""The composition root: builds the FastAPI app from the kernel and the contexts.

Adding a context is one new package under `allot/contexts/` and one line in `CONTEXTS`; its
`api.router`, `views.router`, `handlers` and `tasks` modules are picked up when present.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from allot import __version__
from allot.kernel import runtime
from allot.kernel.config import Settings, get_settings
from allot.kernel.db.engine import Database
from allot.kernel.events.dispatcher import Dispatcher
from allot.kernel.logging import configure_logging
from allot.kernel.timers import TimerRunner
from allot.kernel.web import docs, health
from allot.kernel.web.middleware import RequestContextMiddleware
from allot.kernel.web.problems import install_problem_handlers
from allot.kernel.web.routers import expand_routes, include_flat, index_routes

# Order matters only for navigation; dependencies between contexts go through public interfaces.
CONTEXTS: tuple[str, ...] = ("identity", "audit", "routing", "customers", "leads")

STATIC_DIR = Path(__file__).resolve().parent / "web" / "static"


def _optional_module(name: str) -> Any | None:
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def installed_contexts() -> list[str]:
    return [name for name in CONTEXTS if _optional_module(f"allot.contexts.{name}") is not None]


def load_contexts() -> list[str]:
    """Import every context's models, handlers and timer tasks (registering them)."""
    names = installed_contexts()
    for context_name in names:
        for part in ("models", "handlers", "tasks"):
            _optional_module(f"allot.contexts.{context_name}.{part}")
    return names


PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details. Branch on `type`, which never changes.",
    "properties": {
        "type": {"type": "string", "example": "urn:allot:problem:validation-error"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "example": "body.email"},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
    "required": ["type", "title", "status"],
}


def settle_garbage_collector() -> None:
    """Everything loaded at start-up (modules, routes, templates, mappers) lives as long as the
    process: freezing it keeps the collector from walking it again on every full collection, and
    a larger first generation collects less often under a stream of short-lived request objects.
    On the HTTP lead intake the throughput difference was within the machine's noise (286 vs
    293 leads/s at 8 clients), and no collection took over 20 ms in a 32-client run with it;
    it is kept because it costs nothing."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


GC_FIRST_GENERATION_THRESHOLD = 20_000  # CPython's default is 700


def native_telemetry() -> TelemetryConfig:
    """FastAPI's own OpenTelemetry (a span, metrics and a log record per request) stays on when
    OpenTelemetry is set up as the process starts (`opentelemetry-instrument`, or FastAPI's
    FASTAPI_OTEL_AUTO_CONFIGURE). Otherwise it is switched off here, once: FastAPI would ask
    the three global providers on every request whether they are still placeholders (≈6 µs)."""
    if os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    from opentelemetry import _logs, metrics, trace

    placeholders = {"ProxyTracerProvider", "_ProxyMeterProvider", "ProxyLoggerProvider"}
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(),
                 _logs.get_logger_provider())  # fmt: skip
    if any(type(provider).__name__ not in placeholders for provider in providers):
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    *,
    run_background: bool | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    database = database or Database(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        read_pool_size=settings.sqlite_read_pool_size,
    )
    background = settings.run_background_workers if run_background is None else run_background
    # The all-in-one role's background services (kernel/runtime.py): in-process dispatch and
    # timers, or relay + broker worker + timers in broker mode; none for `allot api`.
    services = runtime.compose("serve", database, settings) if background else None
    dispatcher = (services and services.get("dispatcher")) or Dispatcher(database)
    timers = (services and services.get("timers")) or TimerRunner(database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settle_garbage_collector()
        if services is not None:
            await services.start()
        try:
            yield
        finally:
            if services is not None:
                await services.stop()
            await database.dispose()

    app = FastAPI(
        title="Allot API",
        version=__version__,
        description=(
            "Allot takes incoming work in, routes it to the right person, and carries it through "
            "its life. Errors are RFC 9457 problem+json; list endpoints use opaque cursors; "
            "creating POSTs accept `Idempotency-Key`."
        ),
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        telemetry=native_telemetry(),
    )
    app.state.settings = settings
    app.state.database = database
    app.state.dispatcher = dispatcher
    app.state.timers = timers
    app.state.secret_key = settings.resolved_secret_key()
    app.state.template_processors = []
    app.state.readiness_probes = {
        name: health.tcp_probe(url)
        for name, url in (("broker", settings.broker_url), ("redis", settings.redis_url))
        if url
    }

    install_problem_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_bytes=settings.max_request_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )

    include_flat(app, health.router)
    include_flat(app, docs.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    contexts = load_contexts()
    for context_name in contexts:
        package = importlib.import_module(f"allot.contexts.{context_name}")
        install = getattr(package, "install", None)
        if install is not None:  # e.g. identity installs the authenticator
            install(app)
    # Every JSON router before any page router: routes are matched in order, and an API call
    # should not be compared with every page of every context first.
    for parts in (("api", "import_api"), ("views",)):  # import_api: leads' CSV imports
        for context_name in contexts:
            for part in parts:
                module = _optional_module(f"allot.contexts.{context_name}.{part}")
                if module is not None:
                    include_flat(app, module.router)
    index_routes(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=list(expand_routes(app.routes)),
            )  # fmt: skip
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                PROBLEM_SCHEMA
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_api_app() -> FastAPI:
    """`allot api`: HTTP only; events and timers run in their own processes (kernel/runtime.py)."""
    app = create_app(run_background=False)
    # This process never talks to the broker (requests write the outbox; the relay publishes
    # it), so a broker outage must not take every API replica out of service.
    app.state.readiness_probes.pop("broker", None)
    return app
