"""The app's signing-key ring (harness/lab/kerp/keyring.py): wrapping at rest, verification by kid and state."""

from __future__ import annotations

import time

import jwt
import pytest

from harness.errors import HarnessError
from harness.lab.kerp import keyring


def _row(key: dict, state: str, created: float) -> tuple:
    return (key["kid"], key["alg"], state, key["public_pem"], key["private_wrapped"] if state == "current" else None,
            created, None if state != "revoked" else created + 1)


def test_private_keys_are_wrapped_and_unwrap_only_with_the_same_secret():
    f = keyring.wrapper("lab-secret-1")
    key = keyring.new_key(f)
    assert "PRIVATE" not in key["private_wrapped"] and key["alg"] == "ES256" and key["kid"].startswith("k")
    private = keyring.unwrap(f, key["private_wrapped"])
    token = jwt.encode({"sub": "1"}, private, algorithm="ES256", headers={"kid": key["kid"]})
    ring = keyring.Ring.from_rows([_row(key, "current", 1.0)])
    assert jwt.decode(token, ring.verification_key(key["kid"]), algorithms=["ES256"])["sub"] == "1"
    with pytest.raises(HarnessError, match="cannot be unwrapped"):
        keyring.unwrap(keyring.wrapper("another-secret"), key["private_wrapped"])


def test_ring_refuses_revoked_unknown_and_missing_kids_and_keeps_retired_ones():
    f = keyring.wrapper("s")
    old, mid, new = keyring.new_key(f), keyring.new_key(f), keyring.new_key(f)
    ring = keyring.Ring.from_rows([_row(old, "revoked", 1.0), _row(mid, "retired", 2.0), _row(new, "current", 3.0)])
    assert ring.current_kid == new["kid"] and ring.revoked() == {old["kid"]}
    assert ring.verification_key(mid["kid"]) is not None and ring.verification_key(new["kid"]) is not None
    with pytest.raises(keyring.KeyRefused, match="revoked"):
        ring.verification_key(old["kid"])
    with pytest.raises(keyring.KeyRefused, match="unknown"):
        ring.verification_key("k-nope")
    with pytest.raises(keyring.KeyRefused, match="names no key"):
        ring.verification_key(None)
    assert ring.signing_key(f)[0] == new["kid"]
    assert [k["state"] for k in ring.describe()] == ["revoked", "retired", "current"]


def test_since_moves_only_when_the_current_key_or_the_revoked_set_changes():
    f = keyring.wrapper("s")
    a, b = keyring.new_key(f), keyring.new_key(f)
    first = keyring.Ring.from_rows([_row(a, "current", 1.0)])
    first.follow(keyring.Ring())
    assert first.since is not None
    first.signing_key(f)
    time.sleep(0.01)
    again = keyring.Ring.from_rows([_row(a, "current", 1.0)])
    again.follow(first)
    assert again.since == first.since and again._private is first._private  # unwrapped once per key
    rotated = keyring.Ring.from_rows([_row(a, "revoked", 1.0), _row(b, "current", 2.0)])
    rotated.follow(again)
    assert rotated.since > again.since and rotated._private is None
    with pytest.raises(keyring.KeyRefused, match="no current"):
        keyring.Ring().signing_key(f)
