"""Masking personal data (phones, emails, names) before it can reach a log line.

152-FZ and GDPR alike: logs are copied, shipped and kept; personal data must not be in them.
`mask_text` is applied to every log event by the logging pipeline; contexts additionally mark
fields as personal (see `PERSONAL_FIELD_NAMES`) so their values are masked whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Field names whose values are personal data wherever they appear in a log event.
PERSONAL_FIELD_NAMES = frozenset(
    {
        "name", "full_name", "first_name", "last_name", "middle_name", "display_name",
        "email", "phone", "phones", "emails", "address", "passport", "birth_date", "password",
        "token", "secret", "authorization", "cookie", "csrf_token",
    }
)  # fmt: skip

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# International or Russian-looking phone numbers: +7 (912) 345-67-89, 89123456789, +44 20 7946 0958
_PHONE = re.compile(r"(?<![\w])(\+?\d[\d\s().-]{8,}\d)(?![\w])")


def mask_email(value: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", value)


def mask_phone(value: str) -> str:
    def repl(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(1))
        if len(digits) < 10:
            return match.group(1)
        return f"***{digits[-2:]}"

    return _PHONE.sub(repl, value)


def mask_text(value: str) -> str:
    return mask_phone(mask_email(value))


def mask_value(value: Any) -> Any:
    """Mask a whole value known to be personal (keeps only a hint of its shape)."""
    if value is None or value == "":
        return value
    if isinstance(value, str):
        return value[:1] + "***" if "@" not in value else mask_email(value)
    if isinstance(value, list | tuple):
        return [mask_value(v) for v in value]
    return "***"


def mask_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    masked: dict[str, Any] = {}
    for key, value in data.items():
        if key.lower() in PERSONAL_FIELD_NAMES:
            masked[key] = mask_value(value)
        elif isinstance(value, Mapping):
            masked[key] = mask_mapping(value)
        elif isinstance(value, str):
            masked[key] = mask_text(value)
        else:
            masked[key] = value
    return masked
