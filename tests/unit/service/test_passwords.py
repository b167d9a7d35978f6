"""argon2id hashing."""

from __future__ import annotations

from service.passwords import Passwords


def test_hash_verify_and_rehash() -> None:
    cheap = Passwords(1, 8, 1)
    hashed = cheap.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert cheap.verify(hashed, "correct horse")
    assert not cheap.verify(hashed, "wrong horse")
    assert not cheap.verify(None, "correct horse")  # unknown account: still false
    assert not cheap.verify("not-a-hash", "x")
    assert not cheap.needs_rehash(hashed)
    assert Passwords(2, 8, 1).needs_rehash(hashed)
