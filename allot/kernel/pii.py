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
        "surname", "patronymic", "fio",
        "email", "phone", "phones", "emails", "address", "passport", "birth_date", "password",
        "token", "secret", "authorization", "cookie", "csrf_token",
    }
)  # fmt: skip
# `customer_name`, `contact_phone`, ...: personal however they are prefixed (a `queue_name`
# masked too is the price of never missing a `client_name`).
PERSONAL_FIELD_SUFFIXES = (
    "_name", "_email", "_emails", "_phone", "_phones", "_address", "_passport",
)  # fmt: skip

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# International or Russian-looking phone numbers: +7 (912) 345-67-89, 89123456789, +44 20 7946 0958
_PHONE = re.compile(r"(?<![\w])(\+?\d[\d\s().-]{8,}\d)(?![\w])")
# Machine data whose digit runs look like phones to `_PHONE` ("2026-01-05 09:00", a UUID whose
# last group is all digits); left whole, since garbling them hides nothing and breaks tracing.
_MACHINE_DATA = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
    r"|\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)


def mask_email(value: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", value)


def _mask_phones_in(value: str) -> str:
    def repl(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(1))
        if len(digits) < 10:
            return match.group(1)
        return f"***{digits[-2:]}"

    return _PHONE.sub(repl, value)


def mask_phone(value: str) -> str:
    pieces: list[str] = []
    position = 0
    for machine in _MACHINE_DATA.finditer(value):
        pieces += [_mask_phones_in(value[position : machine.start()]), machine.group()]
        position = machine.end()
    pieces.append(_mask_phones_in(value[position:]))
    return "".join(pieces)


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


def is_personal_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in PERSONAL_FIELD_NAMES or lowered.endswith(PERSONAL_FIELD_SUFFIXES)


def _mask_nested(value: Any) -> Any:
    if isinstance(value, Mapping):
        return mask_mapping(value)
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask_nested(v) for v in value]
    return value


def mask_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: mask_value(value) if is_personal_field(str(key)) else _mask_nested(value)
        for key, value in data.items()
    }
