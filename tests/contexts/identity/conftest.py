"""Identity tests hash with cheap argon2 parameters: the real cost (64 MiB, 3 passes) would only
make the suite slow. The UI smoke test signs in with the real parameters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher

from allot.contexts.identity import passwords

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    previous = passwords.use_hasher(CHEAP)
    yield
    passwords.use_hasher(previous)
