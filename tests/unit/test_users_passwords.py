"""Argon2id hashing: the parameters, verification, and when a hash needs upgrading."""

from __future__ import annotations

from argon2 import extract_parameters

from users.passwords import Passwords

# OWASP's minimum profile keeps the unit tests fast; production defaults are stronger.
FAST = {"time_cost": 2, "memory_kib": 19456, "parallelism": 1}


async def test_a_hash_is_argon2id_with_the_configured_parameters() -> None:
    hashed = await Passwords(**FAST).hash("correct horse battery")

    params = extract_parameters(hashed)
    assert hashed.startswith("$argon2id$")
    assert (params.time_cost, params.memory_cost, params.parallelism) == (2, 19456, 1)
    assert "correct horse battery" not in hashed


async def test_the_right_password_verifies_and_a_wrong_one_does_not() -> None:
    passwords = Passwords(**FAST)
    hashed = await passwords.hash("correct horse battery")

    assert await passwords.verify(hashed, "correct horse battery")
    assert not await passwords.verify(hashed, "correct horse batterY")


async def test_no_hash_means_no_match_after_checking_a_dummy() -> None:
    passwords = Passwords(**FAST)
    await passwords.prepare()

    assert not await passwords.verify(None, "anything at all")


async def test_a_hash_with_other_parameters_needs_a_rehash() -> None:
    old = await Passwords(time_cost=2, memory_kib=19456, parallelism=1).hash("pw-123456")
    current = Passwords(time_cost=3, memory_kib=19456, parallelism=1)

    assert current.needs_rehash(old)
    assert not current.needs_rehash(await current.hash("pw-123456"))
    assert await current.verify(old, "pw-123456")


async def test_a_corrupt_hash_never_matches_and_asks_for_a_rehash() -> None:
    passwords = Passwords(**FAST)

    assert not await passwords.verify("not-a-hash", "whatever1")
    assert passwords.needs_rehash("not-a-hash")


async def test_a_lone_surrogate_is_hashed_and_checked_without_error() -> None:
    passwords = Passwords(**FAST)
    hashed = await passwords.hash("pass\ud800word")

    assert await passwords.verify(hashed, "pass\ud800word")
    assert not await passwords.verify(hashed, "password")
