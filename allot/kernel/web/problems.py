"""Every error leaves as RFC 9457 problem+json (API) or a friendly page (browser), never a bare
500 with a traceback, and the transaction it happened in is rolled back (see `uow`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from allot.kernel.errors import (
    PROBLEM_TYPE_PREFIX,
    AllotError,
    Conflict,
    FieldError,
    ValidationFailed,
)
from allot.kernel.idempotency import IdempotentReplay
from allot.kernel.logging import get_logger

log = get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "You are not allowed to do this"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
}


def wants_html(request: Request) -> bool:
    if request.url.path.startswith("/api/") or request.headers.get("HX-Request") == "true":
        return False
    return "text/html" in request.headers.get("accept", "")


def problem_response(request: Request, problem: dict[str, Any]) -> Response:
    status = int(problem["status"])
    if wants_html(request):
        from allot.kernel.web.templating import render

        template = f"errors/{status}.html" if status in (403, 404, 500) else "errors/generic.html"
        try:
            return render(request, template, {"problem": problem}, status_code=status)
        except Exception:  # an error page must never fail: fall back to problem+json
            log.exception("error page failed to render")
    headers = {"Retry-After": str(problem["retry_after"])} if "retry_after" in problem else None
    return JSONResponse(problem, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _field_path(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location)


async def handle_allot_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AllotError)
    return problem_response(request, exc.to_problem(instance=request.url.path))


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    json_invalid = False
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            json_invalid = True
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            message = "Unknown field"
        errors.append(FieldError(_field_path(error.get("loc", ())), message, str(error["type"])))
    if json_invalid:
        problem = {
            "type": PROBLEM_TYPE_PREFIX + "malformed-json",
            "title": "Malformed JSON",
            "status": 400,
            "detail": "The request body is not valid JSON",
            "instance": request.url.path,
        }
        return problem_response(request, problem)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    failure = ValidationFailed(detail=detail, errors=errors)
    return problem_response(request, failure.to_problem(instance=request.url.path))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    problem = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": exc.status_code,
        "detail": detail,
        "instance": request.url.path,
    }
    response = problem_response(request, problem)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def handle_integrity_error(request: Request, exc: Exception) -> Response:
    # A unique or check constraint caught what a service did not: still the client's conflict.
    log.warning("integrity error", error=type(exc).__name__)
    conflict = Conflict(detail="The change conflicts with existing data")
    return problem_response(request, conflict.to_problem(instance=request.url.path))


async def handle_replay(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplay)
    return exc.response()


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path)
    problem = {
        "type": PROBLEM_TYPE_PREFIX + "internal-error",
        "title": "Internal error",
        "status": 500,
        "detail": "Something went wrong on our side; the change was not saved",
        "instance": request.url.path,
    }
    return problem_response(request, problem)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AllotError, handle_allot_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(IntegrityError, handle_integrity_error)
    app.add_exception_handler(IdempotentReplay, handle_replay)
    app.add_exception_handler(Exception, handle_unexpected)
