"""The display filters every template uses: phones as people write them, money as rubles with
thin-space thousands. Storage keeps E.164 and integer kopecks; only the page changes."""

from __future__ import annotations

import pytest

from allot.kernel.i18n import using_locale
from allot.kernel.money import Money
from allot.kernel.web.templating import format_money, format_phone, get_templates

THIN = "\u202f"  # narrow no-break space between thousands
NBSP = "\u00a0"  # between the amount and the sign


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("+79123456789", "+7 912 345-67-89"),
        ("+74951234567", "+7 495 123-45-67"),  # a Moscow landline
        ("89123456789", "+7 912 345-67-89"),  # written the domestic way
        ("+77011234567", "+7 701 123-45-67"),  # Kazakhstan shares +7 and the same grouping
        ("+380441234567", "+380 44 123 4567"),  # others: their country's international form
        ("+14155552671", "+1 415-555-2671"),
        ("not a phone", "not a phone"),  # never hide what was stored
        ("+7123", "+7123"),
        ("", ""),
        (None, ""),
    ],
)
def test_phones_are_shown_grouped(stored, shown):
    assert format_phone(stored) == shown


@pytest.mark.parametrize(
    ("locale", "money", "shown"),
    [
        ("ru", Money(15_000_000), f"150{THIN}000{NBSP}₽"),
        ("ru", Money(15_000_050), f"150{THIN}000,50{NBSP}₽"),
        ("ru", Money(123_456_789_00), f"123{THIN}456{THIN}789{NBSP}₽"),
        ("ru", Money(99), f"0,99{NBSP}₽"),
        ("en", Money(15_000_000), f"150,000{NBSP}₽"),
        ("en", Money(15_000_050), f"150,000.50{NBSP}₽"),
    ],
)
def test_money_is_shown_in_rubles_without_needless_kopecks(locale, money, shown):
    with using_locale(locale):
        assert format_money(money) == shown


def test_the_filters_are_registered_for_templates():
    env = get_templates().env
    template = env.from_string("{{ phone|phone }} · {{ amount|money }}")
    with using_locale("ru"):
        assert template.render(phone="+79123456789", amount=Money(15_000_000)) == (
            f"+7 912 345-67-89 · 150{THIN}000{NBSP}₽"
        )
