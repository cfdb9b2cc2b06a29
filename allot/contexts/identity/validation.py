"""Input rules for users, shared by the service, the forms and sign-in. Field names are the
API's (`body.email`), so the JSON API and the admin forms point at the same field."""

from __future__ import annotations

from collections.abc import Iterable

from email_validator import EmailNotValidError, validate_email

from allot.kernel.auth import ROLES
from allot.kernel.errors import ValidationFailed
from allot.kernel.i18n import LOCALES

from . import passwords
from .models import EMAIL_MAX_LENGTH

DISPLAY_NAME_MAX_LENGTH = 200


def normalize_email(raw: str, field: str = "body.email") -> str:
    if len(raw) > EMAIL_MAX_LENGTH:
        raise ValidationFailed.on(field, "The address is too long")
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed.on(field, str(exc)) from exc
    return result.normalized.lower()


def lookup_form(email: str) -> str:
    """How to look an e-mail up: normalised like stored ones, or as typed if it is not valid
    (then it simply matches nobody)."""
    try:
        return normalize_email(email)
    except ValidationFailed:
        return email.strip().lower()


def check_password(password: str, field: str = "body.password") -> None:
    if len(password) < passwords.MIN_PASSWORD_LENGTH:
        raise ValidationFailed.on(
            field, f"At least {passwords.MIN_PASSWORD_LENGTH} characters", "too_short"
        )
    if len(password) > passwords.MAX_PASSWORD_LENGTH:
        raise ValidationFailed.on(field, "Too long", "too_long")


def check_roles(roles: Iterable[str], field: str = "body.roles") -> frozenset[str]:
    chosen = frozenset(roles)
    unknown = sorted(chosen - set(ROLES))
    if unknown:
        raise ValidationFailed.on(field, f"Unknown roles: {', '.join(unknown)}", "unknown_role")
    return chosen


def check_locale(locale: str, field: str = "body.locale") -> str:
    if locale not in LOCALES:
        raise ValidationFailed.on(field, f"One of: {', '.join(LOCALES)}", "unknown_locale")
    return locale


def clean_display_name(value: str, field: str = "body.display_name") -> str:
    cleaned = " ".join(value.split())
    if not cleaned:
        raise ValidationFailed.on(field, "Must not be empty", "empty")
    if len(cleaned) > DISPLAY_NAME_MAX_LENGTH:
        raise ValidationFailed.on(field, "Too long", "too_long")
    return cleaned
