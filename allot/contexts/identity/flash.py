"""Flash messages moved to the kernel (`allot.kernel.web.flash`) so every context can use them;
these names stay importable from here for existing callers."""

from __future__ import annotations

from allot.kernel.web.flash import (
    FLASH_COOKIE,
    LEVELS,
    MAX_MESSAGES,
    MAX_TEXT_LENGTH,
    Flash,
    FlashReader,
    decode,
    encode,
    flash,
)

__all__ = [
    "FLASH_COOKIE",
    "LEVELS",
    "MAX_MESSAGES",
    "MAX_TEXT_LENGTH",
    "Flash",
    "FlashReader",
    "decode",
    "encode",
    "flash",
]
