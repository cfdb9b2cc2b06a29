"""Helpers for identity's HTML forms: reading fields, and turning the service's field errors
(English, for the API) into messages in the reader's language next to the right input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

from allot.kernel.auth import ROLES
from allot.kernel.errors import AllotError
from allot.kernel.i18n import N_
from allot.kernel.i18n import gettext as _

from .passwords import MIN_PASSWORD_LENGTH

ROLE_LABELS = {
    "admin": N_("Administrator"),
    "manager": N_("Manager"),
    "analyst": N_("Analyst"),
    "operator": N_("Operator"),
    "client": N_("Client"),
    "provider": N_("Provider"),
    "worker": N_("Worker"),
    "candidate": N_("Candidate"),
    "partner": N_("Partner"),
}
GENERAL = "__all__"


def role_labels() -> dict[str, str]:
    return {role: _(ROLE_LABELS.get(role, role)) for role in ROLES}


def form_text(form: FormData, name: str, *, strip: bool = True) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.strip() if strip else value


def form_list(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


@dataclass
class UserFormValues:
    """What the user form shows: the stored user, or what was typed when it failed."""

    email: str = ""
    display_name: str = ""
    locale: str = "ru"
    roles: list[str] = field(default_factory=lambda: ["operator"])
    team_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_form(cls, form: FormData) -> UserFormValues:
        return cls(
            email=form_text(form, "email"),
            display_name=form_text(form, "display_name"),
            locale=form_text(form, "locale") or "ru",
            roles=form_list(form, "roles"),
            team_ids=form_list(form, "team_ids"),
        )


def _message(field: str, code: str, fallback: str) -> str:
    if code == "too_short":
        return _("At least %(count)s characters.", count=MIN_PASSWORD_LENGTH)
    if code == "duplicate":
        if field == "email":
            return _("A user with this e-mail already exists.")
        return _("This name is already taken.")
    messages = {
        "too_long": N_("Too long."),
        "empty": N_("Must not be empty."),
        "unknown_role": N_("Unknown role."),
        "unknown_team": N_("Unknown team."),
        "unknown_locale": N_("Choose Russian or English."),
        "not_permitted": N_("Not among your permissions."),
    }
    if code in messages:
        return _(messages[code])
    if field == "email":
        return _("Enter a valid e-mail address.")
    return fallback


def field_errors(exc: AllotError) -> dict[str, Any]:
    """{"email": "...", "__all__": "..."}: per input, plus one message for the whole form."""
    errors: dict[str, Any] = {}
    for error in exc.errors:
        name = error.field.rsplit(".", 1)[-1]
        errors.setdefault(name, _message(name, error.code, error.message))
    if not exc.errors:
        errors[GENERAL] = _(exc.detail) if exc.detail else _(exc.title)
    return errors
