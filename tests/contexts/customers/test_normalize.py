"""Phones and e-mails are stored in one form each, so the same contact typed differently is
recognised; what is not a contact is refused with the field named."""

from __future__ import annotations

import pytest

from allot.contexts.customers import normalize_email, normalize_phone
from allot.contexts.customers.service import parse_search
from allot.kernel.errors import ValidationFailed


@pytest.mark.parametrize(
    "raw",
    [
        "8 912 345-67-89",
        "+7 (912) 345 67 89",
        "9123456789",
        "89123456789",
        "7 912 345 67 89",
        "+7-912-345-67-89",
        "  8(912)3456789 ",
    ],
)
def test_russian_mobile_numbers_in_any_notation_become_one_e164(raw):
    assert normalize_phone(raw) == "+79123456789"


def test_landlines_and_foreign_numbers_keep_their_own_country():
    assert normalize_phone("8 (495) 123-45-67") == "+74951234567"
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"
    assert normalize_phone("+380 44 123 4567") == "+380441234567"


@pytest.mark.parametrize("raw", ["12345", "+7 000 000 00 00", "call me", "", "  ", "9" * 80])
def test_what_is_no_valid_phone_is_refused_naming_the_field(raw):
    with pytest.raises(ValidationFailed) as failure:
        normalize_phone(raw, "body.customer.phone")
    (error,) = failure.value.errors
    assert error.field == "body.customer.phone"
    assert raw.strip() == "" or raw not in failure.value.detail  # never echoes the value


def test_emails_are_validated_and_lowercased():
    assert normalize_email("  Ivan.Petrov@Example.RU ") == "ivan.petrov@example.ru"
    assert normalize_email("olga@пример.рф") == "olga@пример.рф"
    for raw in ("ivan@", "no-at-sign", "a@b", "", "x" * 400 + "@example.ru"):
        with pytest.raises(ValidationFailed) as failure:
            normalize_email(raw, "body.email")
        assert failure.value.errors[0].field == "body.email"


def test_search_text_is_read_as_a_phone_an_email_or_a_name():
    assert parse_search("8 912 345-67-89").phone_exact == "+79123456789"
    assert parse_search("345-67").phone_digits == ("34567",)
    assert parse_search("8912").phone_digits == ("8912", "7912")
    assert parse_search("IVAN@").email_part == "ivan@"
    name_search = parse_search("  ИВАН Петров ")
    assert name_search.name_part == "иван петров"
    assert name_search.phone_exact is None
    assert name_search.phone_digits == ()
    assert parse_search("   ") == parse_search("")
