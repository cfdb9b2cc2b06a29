"""Russian and English: Babel catalogs (`allot/locale/<lang>/LC_MESSAGES/messages.po`), a
per-request locale in a context variable, and locale-aware formatting at the edges.

Catalogs are read from the .po files at start-up (compiled in memory), so there is no build step
and no stale .mo file to forget.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime as babel_format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import NullTranslations, Translations

from allot.kernel.money import Money

LOCALES = ("ru", "en")
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

locale_var: ContextVar[str] = ContextVar("allot_locale", default="ru")


@cache
def translations(locale: str) -> NullTranslations:
    po_file = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if not po_file.exists():
        return NullTranslations()
    with po_file.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


def gettext(message: str, **variables: object) -> str:
    text = translations(locale_var.get()).gettext(message)
    return text % variables if variables else text


def N_(message: str) -> str:
    """Mark a msgid for extraction where it is only translated later (nav labels, choices)."""
    return message


@contextmanager
def using_locale(locale: str) -> Iterator[None]:
    """Translate in `locale` for the duration of a block (a job, an e-mail, a test)."""
    token = locale_var.set(locale if locale in LOCALES else "ru")
    try:
        yield
    finally:
        locale_var.reset(token)


def ngettext(singular: str, plural: str, n: int, **variables: object) -> str:
    text = translations(locale_var.get()).ngettext(singular, plural, n)
    return text % {"num": n, **variables}


def negotiate(accept_language: str | None, default: str) -> str:
    """Pick ru or en from an Accept-Language header (quality order), else the default."""
    if not accept_language:
        return default
    candidates: list[tuple[float, str]] = []
    for part in accept_language.split(","):
        piece = part.strip().split(";")
        tag = piece[0].strip().lower()
        quality = 1.0
        for param in piece[1:]:
            if param.strip().startswith("q="):
                try:
                    quality = float(param.strip()[2:])
                except ValueError:
                    quality = 0.0
        candidates.append((quality, tag.split("-")[0]))
    for _, language in sorted(candidates, key=lambda c: -c[0]):
        if language in LOCALES:
            return language
    return default


def _babel_locale() -> Locale:
    try:
        return Locale.parse(locale_var.get())
    except (UnknownLocaleError, ValueError):
        return Locale.parse("ru")


def format_datetime(value: datetime | None, timezone: str = "Europe/Moscow") -> str:
    """A stored UTC instant shown in the business time zone, in the reader's language."""
    if value is None:
        return "—"
    return babel_format_datetime(
        value, format="short", tzinfo=ZoneInfo(timezone), locale=_babel_locale()
    )


def format_money(value: Money) -> str:
    return format_currency(Decimal(value.major), value.currency, locale=_babel_locale())
