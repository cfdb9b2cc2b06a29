"""Routing's HTML forms: choice labels, reading form fields into the API's request models, and
turning validation errors (pydantic's and the services') into messages next to the right input.

The forms build the same `QueueCreate` / `AgentCreate` ... models the JSON API takes, so a page
and an API call are validated by one set of rules.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from allot.kernel.errors import AllotError
from allot.kernel.i18n import N_
from allot.kernel.i18n import gettext as _

STATUS_LABELS = {
    "available": N_("Available"),
    "away": N_("Away"),
    "offline": N_("Offline"),
}
STRATEGY_LABELS = {
    "least_loaded": N_("Least loaded"),
    "most_available": N_("Most spare capacity"),
    "round_robin": N_("Round robin"),
    "longest_idle": N_("Longest idle"),
    "score": N_("Score"),
}
MODE_LABELS = {
    "direct": N_("Assign directly"),
    "offer": N_("Offer to one agent"),
    "broadcast": N_("Offer to several, first accept wins"),
}
GENERAL = "__all__"
NOT_JSON = N_("Not valid JSON")
NOT_AN_OBJECT = N_("Must be a JSON object.")

# Service error codes (see expressions.py, schedule.py, agent_service.py) -> our wording.
_SERVICE_CODES = {
    "expression_syntax": N_("The expression has a syntax error"),
    "expression_invalid": N_("The expression is not valid"),
    "time_format": N_("Times are written HH:MM"),
    "interval": N_("Each interval is [start, end] with the end after the start"),
    "timezone": N_("Unknown time zone"),
    "below_load": N_("Below the work the agent holds now"),
    "unknown_scorer": N_("Unknown scorer"),
}
# pydantic error types -> our wording (the same rules the API reports in English).
_PYDANTIC_TYPES = {
    "missing": N_("Required."),
    "string_too_short": N_("Must not be empty."),
    "string_too_long": N_("Too long."),
    "int_parsing": N_("Enter a whole number."),
    "int_from_float": N_("Enter a whole number."),
    "float_parsing": N_("Enter a number."),
    "literal_error": N_("Choose one of the options."),
    "dict_type": NOT_AN_OBJECT,
}


def choices(labels: dict[str, str]) -> list[tuple[str, str]]:
    return [(value, _(label)) for value, label in labels.items()]


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def word_list(value: str) -> list[str]:
    """ "loans, cards" -> ["loans", "cards"] (commas or new lines; blanks dropped)."""
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


def optional(value: str) -> str | None:
    return value or None


def json_object(value: str, field: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise FormInvalid({field: f"{_(NOT_JSON)} ({exc})"}) from exc
    if not isinstance(parsed, dict):
        raise FormInvalid({field: _(NOT_AN_OBJECT)})
    return parsed


class FormInvalid(Exception):
    """Errors found while reading a form, before any service ran."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def _field_name(path: str) -> str:
    """ "body.schedule.weekly.mon.0" -> "schedule": the form input that holds the value."""
    parts = path.split(".")
    if parts[0] == "body" and len(parts) > 1:
        return parts[1]
    return parts[0]


def pydantic_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else GENERAL
        kind = error["type"]
        context = error.get("ctx") or {}
        if kind in ("greater_than_equal", "greater_than"):
            message = _("Must be at least %(limit)s.", limit=context.get("ge", context.get("gt")))
        elif kind in ("less_than_equal", "less_than"):
            message = _("Must be at most %(limit)s.", limit=context.get("le", context.get("lt")))
        elif kind in _PYDANTIC_TYPES:
            message = _(_PYDANTIC_TYPES[kind])
        elif name == "email":
            message = _("Enter a valid e-mail address.")
        else:
            message = str(error["msg"])
        errors.setdefault(name, message)
    return errors


def service_errors(exc: AllotError) -> dict[str, str]:
    """A service's ValidationFailed / Conflict as {input name: message}, or one for the form."""
    errors: dict[str, str] = {}
    for error in exc.errors:
        name = _field_name(error.field)
        wording = _SERVICE_CODES.get(error.code)
        errors.setdefault(name, f"{_(wording)} ({error.message})" if wording else error.message)
    if not errors:
        errors[GENERAL] = _(exc.detail) if exc.detail else _(exc.title)
    return errors
