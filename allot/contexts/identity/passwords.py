"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendation).

`verify` also says when a stored hash was made with other parameters than today's, so the login
that just proved the password can store a fresh hash: raising the cost later upgrades every
active user without a reset. Hashing is deliberately slow, so it runs in a worker thread and
never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a cap keeps hashing from being a DoS lever

_hasher = PasswordHasher()
# Verified against when the account does not exist, so "no such user" and "wrong password"
# take the same time and an attacker cannot enumerate e-mail addresses by timing. Made on first
# need (in the worker thread), not at import: hashing costs ≈0.35 s, which every process would
# pay at start-up, including the relay and timers that never see a login.
_dummy_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    new_hash: str | None = None  # set when the password was right but the hash is outdated


def use_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Swap the hasher (cost parameters); returns the previous one."""
    global _hasher, _dummy_hash
    previous, _hasher = _hasher, hasher
    _dummy_hash = None
    return previous


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify(stored_hash: str | None, password: str) -> Verification:
    """`stored_hash=None` (unknown user, no password set) fails in the same time as a mismatch."""
    return await asyncio.to_thread(_verify, stored_hash, password)


def _verify(stored_hash: str | None, password: str) -> Verification:
    if stored_hash is None:
        _burn_time(password)
        return Verification(ok=False)
    try:
        _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return Verification(ok=False)
    if _hasher.check_needs_rehash(stored_hash):
        return Verification(ok=True, new_hash=_hasher.hash(password))
    return Verification(ok=True)


def _burn_time(password: str) -> None:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("allot-timing-equaliser")
    with contextlib.suppress(VerificationError):
        _hasher.verify(_dummy_hash, password)
