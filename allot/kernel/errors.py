"""Domain errors. Services raise these; the web layer renders them as RFC 9457 problem+json.

Each error has a stable `code`; the problem `type` is `urn:allot:problem:<code>`. Clients branch on
the type, never on the human-readable title or detail, so codes are never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

PROBLEM_TYPE_PREFIX = "urn:allot:problem:"


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str  # dotted path, e.g. "body.customer.phone"
    message: str
    code: str = "invalid"


@dataclass
class AllotError(Exception):
    detail: str = ""
    errors: list[FieldError] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __post_init__(self) -> None:
        Exception.__init__(self, self.detail or self.title)

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.code

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        problem: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if instance:
            problem["instance"] = instance
        if self.errors:
            problem["errors"] = [
                {"field": e.field, "message": e.message, "code": e.code} for e in self.errors
            ]
        problem.update(self.extra)
        return problem


class BadRequest(AllotError):
    status, code, title = 400, "bad-request", "Bad request"


class InvalidCursor(AllotError):
    status, code, title = 400, "invalid-cursor", "Invalid pagination cursor"


class ValidationFailed(AllotError):
    status, code, title = 422, "validation-error", "The request did not pass validation"

    @classmethod
    def on(cls, field_name: str, message: str, code: str = "invalid") -> ValidationFailed:
        return cls(
            detail=f"{field_name}: {message}", errors=[FieldError(field_name, message, code)]
        )


class Unauthorized(AllotError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(AllotError):
    status, code, title = 403, "forbidden", "You are not allowed to do this"


class NotFound(AllotError):
    status, code, title = 404, "not-found", "Not found"


class Conflict(AllotError):
    status, code, title = 409, "conflict", "Conflict with the current state"


class IdempotencyConflict(AllotError):
    status, code, title = 409, "idempotency-key-conflict", "Idempotency-Key reused"


class PayloadTooLarge(AllotError):
    status, code, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(AllotError):
    status, code, title = 415, "unsupported-media-type", "Unsupported media type"


class RateLimited(AllotError):
    status, code, title = 429, "rate-limited", "Too many attempts"
