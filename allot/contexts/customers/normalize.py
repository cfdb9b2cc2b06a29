"""Turning what people type into the one form a contact is stored and deduplicated in.

Phones become E.164 (`+79123456789`), read as Russian numbers unless they carry a country code:
"8 912 345-67-89", "+7 (912) 345 67 89" and "9123456789" are the same phone. E-mails are
validated and lowercased. Messages never repeat the value: they end up in logs and problems.
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from allot.kernel.errors import ValidationFailed

from .models import CONTACT_MAX_LENGTH, KINDS, NAME_MAX_LENGTH, SOURCE_MAX_LENGTH

DEFAULT_REGION = "RU"
# Longer input is no phone however it is punctuated; refusing it early bounds parsing work.
PHONE_INPUT_MAX_LENGTH = 64

# Fast path for the shapes Russian mobiles are typed in ("8 912 345-67-89", "+7 (912) 345-67-89",
# "9123456789"): parsing with phonenumbers costs ~30 µs, which bulk imports feel. Only a number
# the library's own RU mobile pattern accepts takes this path (such a number is valid and its
# E.164 form is "+7" + its ten digits); anything else goes through phonenumbers. Both give the
# same answer (tests/contexts/customers/test_normalize_fast.py checks it with Hypothesis).
_RU_MOBILE_SHAPE = re.compile(
    r"(?:\+7|8|7)?[ -]?(?:\(([0-9]{3})\)|([0-9]{3}))[ -]?([0-9]{3})[ -]?([0-9]{2})[ -]?([0-9]{2})"
)
_RU_METADATA: Any = phonenumbers.PhoneMetadata.metadata_for_region(DEFAULT_REGION)
_RU_MOBILE = re.compile(str(_RU_METADATA.mobile.national_number_pattern))


def fast_ru_mobile(text: str) -> str | None:
    """E.164 form of a common-shaped Russian mobile number; None: ask phonenumbers."""
    shape = _RU_MOBILE_SHAPE.fullmatch(text)
    if shape is None:
        return None
    area, plain_area, *rest = shape.groups()
    national = (area or plain_area) + "".join(rest)
    return "+7" + national if _RU_MOBILE.fullmatch(national) else None


def normalize_phone(raw: str, field: str = "phone") -> str:
    """E.164 form of a phone number; ValidationFailed naming `field` if it is not a valid one."""
    text = raw.strip()
    if not text:
        raise ValidationFailed.on(field, "Enter a phone number", "required")
    if len(text) > PHONE_INPUT_MAX_LENGTH:
        raise ValidationFailed.on(field, "Not a phone number", "invalid_phone")
    fast = fast_ru_mobile(text)
    if fast is not None:
        return fast
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise ValidationFailed.on(field, "Not a phone number", "invalid_phone") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed.on(
            field, "Not a valid phone number (e.g. +7 912 345-67-89)", "invalid_phone"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str, field: str = "email") -> str:
    """A validated, lowercased e-mail address (domain in its Unicode form)."""
    text = raw.strip()
    if not text:
        raise ValidationFailed.on(field, "Enter an e-mail address", "required")
    if len(text) > CONTACT_MAX_LENGTH:
        raise ValidationFailed.on(field, "The address is too long", "too_long")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        raise ValidationFailed.on(field, "Not a valid e-mail address", "invalid_email") from None
    return result.normalized.lower()


def clean_name(raw: str | None, field: str = "name") -> str | None:
    """Whitespace collapsed; an empty name is no name."""
    if raw is None:
        return None
    cleaned = " ".join(raw.split())
    if len(cleaned) > NAME_MAX_LENGTH:
        raise ValidationFailed.on(field, f"At most {NAME_MAX_LENGTH} characters", "too_long")
    return cleaned or None


def clean_source(raw: str, field: str = "source") -> str:
    cleaned = raw.strip()
    if not cleaned:
        raise ValidationFailed.on(field, "Say where the record came from", "required")
    if len(cleaned) > SOURCE_MAX_LENGTH:
        raise ValidationFailed.on(field, f"At most {SOURCE_MAX_LENGTH} characters", "too_long")
    return cleaned


def check_kind(kind: str, field: str = "kind") -> str:
    if kind not in KINDS:
        raise ValidationFailed.on(field, f"One of: {', '.join(KINDS)}", "unknown_kind")
    return kind


def search_form(name: str | None) -> str | None:
    """What name search compares against: casefolded, so "ИВАН" finds "Иван" on SQLite too."""
    return name.casefold() if name else None
