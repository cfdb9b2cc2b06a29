"""Flash messages are kernel plumbing now (any context may flash); identity only installs the
middleware. The cookie is signed: a tampered one shows nothing."""

from __future__ import annotations

import re
from pathlib import Path

from allot.contexts.identity import flash as identity_flash
from allot.kernel.web import flash

PACKAGE = Path(__file__).resolve().parents[2] / "allot"


def test_identity_keeps_the_old_names_importable_from_the_kernel():
    assert identity_flash.flash is flash.flash
    assert identity_flash.FlashReader is flash.FlashReader


def test_no_module_imports_flash_from_identity_any_more():
    old = re.compile(r"from (allot\.contexts\.identity|\.)\.?flash import|identity\.flash")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "flash.py" and old.search(path.read_text())
    ]
    assert offenders == []


def test_the_kernel_flash_module_imports_no_context():
    assert "allot.contexts" not in (PACKAGE / "kernel" / "web" / "flash.py").read_text()


def test_messages_survive_the_signed_cookie_and_a_tampered_one_is_dropped():
    messages = [flash.Flash("success", "Лид сохранён"), flash.Flash("error", "Нет доступа")]
    cookie = flash.encode(b"secret", messages)
    assert flash.decode(b"secret", cookie) == messages
    assert flash.decode(b"another secret", cookie) == []
    payload, _, mac = cookie.rpartition(".")
    assert flash.decode(b"secret", payload[:-2] + "AA." + mac) == []
    assert flash.decode(b"secret", None) == []
