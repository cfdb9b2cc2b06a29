"""Jinja2 templates for every context: shell templates in `allot/web/templates`, each context's in
`allot/contexts/<ctx>/templates/<ctx>/`. htmx requests get a block, others the full page.

Values every page needs (the principal, CSRF token, flash messages, navigation) come from
"template processors": functions `request -> dict` listed in `app.state.template_processors`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import phonenumbers
from babel import Locale, UnknownLocaleError
from babel.numbers import format_decimal, get_currency_symbol
from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks
from starlette.responses import Response

from allot.kernel import i18n
from allot.kernel.money import Money

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def template_dirs() -> list[Path]:
    dirs = [PACKAGE_ROOT / "web" / "templates"]
    dirs += sorted(p for p in (PACKAGE_ROOT / "contexts").glob("*/templates") if p.is_dir())
    return dirs


NARROW_NBSP = "\u202f"  # the thin space Russian typography puts between thousands
NBSP = "\u00a0"
PHONE_REGION = "RU"  # numbers without a country code are Russian


def format_phone(value: str | None) -> str:
    """A stored phone (E.164) for reading: "+7 912 345-67-89" for +7 numbers, the international
    notation of its country for others; anything that is not a valid number is shown as is."""
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value, PHONE_REGION)
    except phonenumbers.NumberParseException:
        return value
    if not phonenumbers.is_valid_number(number):
        return value
    national = str(number.national_number)
    if number.country_code == 7 and len(national) == 10:
        return f"+7 {national[:3]} {national[3:6]}-{national[6:8]}-{national[8:]}"
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL))


def _locale() -> Locale:
    try:
        return Locale.parse(i18n.locale_var.get())
    except (UnknownLocaleError, ValueError):
        return Locale.parse("ru")


def format_money(value: Money | None) -> str:
    """150 000 ₽ (thin-space thousands, no kopecks when there are none), 150,000.50 ₽ in English;
    the currency sign after the amount, joined by a no-break space."""
    if value is None:
        return "—"
    locale = _locale()
    major = value.major
    pattern = "#,##0" if major == major.to_integral_value() else "#,##0.00"
    number = format_decimal(major, format=pattern, locale=locale)
    if locale.language == "ru":
        number = number.replace(NBSP, NARROW_NBSP)
    symbol = get_currency_symbol(value.currency, locale=locale)
    if symbol == value.currency:  # e.g. English has no sign of its own for RUB
        symbol = get_currency_symbol(value.currency, locale="ru")
    return f"{number}{NBSP}{symbol}"


@lru_cache(maxsize=1)
def get_templates() -> Jinja2Blocks:
    templates = Jinja2Blocks(directory=[str(d) for d in template_dirs()])
    env = templates.env
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=i18n.gettext, ngettext=i18n.ngettext, newstyle=True
    )
    env.filters["datetime"] = i18n.format_datetime
    env.filters["money"] = format_money
    env.filters["phone"] = format_phone
    env.globals["current_locale"] = i18n.locale_var.get
    env.autoescape = True
    return templates


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render a page; for an htmx request with `block` given, only that block."""
    values: dict[str, Any] = {"request": request, **(context or {})}
    for processor in getattr(request.app.state, "template_processors", []):
        values.update(processor(request))
    kwargs: dict[str, Any] = {}
    if block is not None and is_htmx(request):
        kwargs["block_name"] = block
    response: Response = get_templates().TemplateResponse(
        request, template, values, status_code=status_code, headers=headers, **kwargs
    )
    return response
