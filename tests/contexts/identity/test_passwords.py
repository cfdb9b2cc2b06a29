"""argon2id hashing: verification, no plaintext kept, and rehash when the cost parameters change
(the login that proves the password stores the upgraded hash)."""

from __future__ import annotations

from argon2 import PasswordHasher
from sqlalchemy import select

from allot.contexts.identity import passwords
from allot.contexts.identity.models import User
from tests.factories import DEFAULT_PASSWORD, login, make_user


async def test_hash_is_argon2id_and_verifies_only_the_right_password():
    stored = await passwords.hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert (await passwords.verify(stored, "correct horse battery staple")).ok
    assert not (await passwords.verify(stored, "Correct horse battery staple")).ok
    assert not (await passwords.verify(None, "anything")).ok
    assert not (await passwords.verify("not a hash", "anything")).ok


async def test_same_password_hashes_differently_each_time():
    assert await passwords.hash_password("same password!") != await passwords.hash_password(
        "same password!"
    )


async def test_outdated_parameters_ask_for_a_rehash():
    stored = await passwords.hash_password("a password of ten")
    assert (await passwords.verify(stored, "a password of ten")).new_hash is None
    previous = passwords.use_hasher(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    try:
        result = await passwords.verify(stored, "a password of ten")
        assert result.ok
        assert result.new_hash is not None
        assert "t=2" in result.new_hash
        assert "m=2048" in result.new_hash
    finally:
        passwords.use_hasher(previous)


async def stored_hash(database, email):
    async with database.reader() as session:
        return (
            await session.execute(select(User.password_hash).where(User.email == email))
        ).scalar()


async def test_login_rehashes_a_hash_made_with_old_parameters(client, database):
    user = await make_user(database, email="old@example.com")
    before = await stored_hash(database, user.email)
    previous = passwords.use_hasher(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    try:
        response = await login(client, user.email, DEFAULT_PASSWORD)
        assert response.status_code == 303
        after = await stored_hash(database, user.email)
        assert after != before
        assert "m=2048" in after
        # A second login with unchanged parameters keeps the hash.
        client.cookies.clear()
        await login(client, user.email, DEFAULT_PASSWORD)
        assert await stored_hash(database, user.email) == after
    finally:
        passwords.use_hasher(previous)
