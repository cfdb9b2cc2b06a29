"""Locale choice and the catalogs: every message in the templates and code has a Russian
translation, with the same placeholders, and the runtime picks the right language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from allot.kernel.i18n import LOCALE_DIR, gettext, negotiate, using_locale
from allot.kernel.web.locale import choose_locale

REPO_ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted_msgids() -> set[str]:
    """What `pybabel extract -F babel.cfg` finds right now (templates and Python)."""
    with (REPO_ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    messages = extract_from_dir(
        str(REPO_ROOT),
        method_map,
        options_map,
        keywords={"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)},
    )
    found: set[str] = set()
    for _filename, _lineno, message, _comments, _context in messages:
        found.update(message if isinstance(message, tuple) else (message,))
    return {m for m in found if m}


def catalog(locale: str):
    with (LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as fp:
        return read_po(fp, locale=locale)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "ru"),
        ("", "ru"),
        ("en-US,en;q=0.9", "en"),
        ("de-DE,de;q=0.9,en;q=0.5", "en"),
        ("de,fr", "ru"),
        ("en;q=0.3,ru;q=0.8", "ru"),
        ("en;q=bogus,ru;q=0.1", "ru"),
    ],
)
def test_accept_language_negotiation(accept, expected):
    assert negotiate(accept, "ru") == expected


def test_the_users_choice_beats_the_cookie_beats_the_header():
    both = {"cookie_locale": "en", "accept_language": "en", "default": "ru"}
    assert choose_locale(user_locale="ru", **both) == "ru"
    assert choose_locale(user_locale=None, **both) == "en"
    assert (
        choose_locale(user_locale=None, cookie_locale="xx", accept_language=None, default="ru")
        == "ru"
    )


def test_gettext_follows_the_bound_locale():
    with using_locale("ru"):
        assert gettext("Sign in") == "Войти"
        assert gettext("Welcome, %(name)s!", name="Анна") == "Добро пожаловать, Анна!"
    with using_locale("en"):
        assert gettext("Sign in") == "Sign in"
    with using_locale("zz"):  # an unknown locale falls back to Russian, never crashes
        assert gettext("Sign in") == "Войти"


def test_every_message_in_templates_and_code_is_translated_to_russian():
    russian = {m.id: m.string for m in catalog("ru") if m.id}
    english = {m.id for m in catalog("en") if m.id}
    extracted = extracted_msgids()
    assert {"Sign in", "Users", "Page not found"} <= extracted  # the extraction itself works
    missing = sorted(m for m in extracted if not russian.get(m))
    assert not missing, (
        "Messages without a Russian translation (run the extract/update commands in babel.cfg "
        "and translate them in allot/locale/ru/LC_MESSAGES/messages.po):\n  " + "\n  ".join(missing)
    )
    assert extracted <= english, sorted(extracted - english)


def test_translations_keep_their_placeholders_and_nothing_is_fuzzy():
    for message in catalog("ru"):
        if not message.id or not message.string:
            continue  # untranslated ones are the completeness test's business
        assert not message.fuzzy, message.id
        assert set(PLACEHOLDER.findall(message.id)) == set(PLACEHOLDER.findall(message.string)), (
            message.id
        )


def test_navigation_labels_are_translated(tmp_path):
    """Contexts register nav labels as msgids; wrap them in `N_()` so extraction finds them."""
    from allot.app import create_app
    from allot.kernel.config import Settings
    from allot.kernel.web.nav import nav_items

    create_app(
        Settings(data_dir=tmp_path, secret_key="x" * 32,  # type: ignore[arg-type]
                 database_url=f"sqlite+aiosqlite:///{tmp_path / 'nav.sqlite3'}"),
        run_background=False,
    )  # fmt: skip
    russian = {m.id: m.string for m in catalog("ru") if m.id}
    untranslated = sorted(f"{i.key}: {i.label}" for i in nav_items() if not russian.get(i.label))
    assert not untranslated, untranslated
