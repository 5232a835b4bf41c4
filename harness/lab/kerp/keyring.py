"""The app's rotatable JWT signing keys: ES256 key pairs in PostgreSQL, one of them current.

Why ES256 and not HS256: with a shared HMAC secret every verifier can also mint tokens, so a leak from any
service is a leak of the signing power, and a rotation must reach every holder of the secret at once. With an
asymmetric key only the signer holds the private half; verifiers (the replicas, a gateway reading the JWKS)
hold public keys that mint nothing. ES256 (P-256) rather than RS256: keys are generated in well under a
millisecond (a rotation during an incident must not wait on RSA prime search), tokens are short, and every
JWT library and gateway verifies it.

Where the keys live: the `signing_keys` table of the K-ERP database. Every replica of both regions reads it
(the DR region from its streaming standby), a rotation commits the new key, the revocation of the old ones
and their audit entries in one transaction, and the key ring follows the database through failover and
backups. Private keys are stored wrapped (Fernet, key derived with HKDF from the app's `--jwt-secret`); a
revoked key's private half is erased. Each replica caches the ring and reloads it every `refresh_s`, so the
replicas agree within `refresh_s` (plus the standby's replay lag in the DR region) after a rotation.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from harness.errors import HarnessError

ALGORITHM = "ES256"
CURRENT, RETIRED, REVOKED = "current", "retired", "revoked"

SQL_RING = ("SELECT kid, alg, state, public_pem, CASE WHEN state = 'current' THEN private_wrapped END,"
            " extract(epoch FROM created_at)::float8, extract(epoch FROM revoked_at)::float8"
            " FROM signing_keys ORDER BY created_at")
SQL_INSERT_KEY = ("INSERT INTO signing_keys (kid, alg, state, public_pem, private_wrapped, reason)"
                  " VALUES (%(kid)s, %(alg)s, 'current', %(public_pem)s, %(private_wrapped)s, %(reason)s)")
# a compromise: every key still usable is revoked and its private half erased
SQL_REVOKE_ALL = ("UPDATE signing_keys SET state = 'revoked', revoked_at = clock_timestamp(), private_wrapped = NULL,"
                  " reason = %(reason)s WHERE state IN ('current', 'retired') RETURNING kid")
# a scheduled rotation: the old current key still verifies the tokens it signed until they expire
SQL_RETIRE_CURRENT = ("UPDATE signing_keys SET state = 'retired', private_wrapped = NULL"
                      " WHERE state = 'current' RETURNING kid")
SQL_LOCK_RING = "LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE"


class KeyRefused(HarnessError):
    """A token names a key the ring does not hold, or a revoked one."""


def wrapper(master_secret: str) -> Fernet:
    """The Fernet key that wraps private keys at rest, derived from the app's secret."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"kerp-signing-keys", info=b"wrap-v1").derive(
        master_secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def new_key(fernet: Fernet) -> dict[str, str]:
    """A fresh P-256 key pair: {"kid", "alg", "public_pem", "private_wrapped"}."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    kid = time.strftime("k%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
    return {"kid": kid, "alg": ALGORITHM, "public_pem": public_pem,
            "private_wrapped": fernet.encrypt(pem).decode("ascii")}


def unwrap(fernet: Fernet, wrapped: str) -> ec.EllipticCurvePrivateKey:
    try:
        pem = fernet.decrypt(wrapped.encode("ascii"))
    except InvalidToken as e:
        raise HarnessError("the signing key cannot be unwrapped with this secret (wrong --jwt-secret?)") from e
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise HarnessError("the stored signing key is not an EC key")
    return key


@dataclass
class Ring:
    """One replica's view of `signing_keys`: public keys by kid and state, the current key's private half."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # kid -> {"state", "public", "created_at", ...}
    current_kid: str | None = None
    current_wrapped: str | None = None
    loaded_at: float = 0.0  # monotonic; 0 = never loaded
    since: float | None = None  # epoch when this replica first held the present current key and revoked set
    _private: tuple[str, Any] | None = None  # (kid, private key) unwrapped once per current key

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> "Ring":
        ring = cls(loaded_at=time.monotonic())
        for kid, alg, state, public_pem, wrapped, created_at, revoked_at in rows:
            ring.keys[kid] = {"alg": alg, "state": state, "public_pem": public_pem, "created_at": created_at,
                              "revoked_at": revoked_at,
                              "public": serialization.load_pem_public_key(public_pem.encode())}
            if state == CURRENT:
                ring.current_kid, ring.current_wrapped = kid, wrapped
        return ring

    def follow(self, previous: "Ring") -> None:
        """Carry over from `previous`: the unwrapped private key while the current key is the same, and `since`
        while neither the current key nor the revoked set changed (else `since` is now)."""
        if previous._private is not None and previous._private[0] == self.current_kid:
            self._private = previous._private
        same = previous.loaded_at and (previous.current_kid, previous.revoked()) == (self.current_kid, self.revoked())
        self.since = previous.since if same else time.time()

    def signing_key(self, fernet: Fernet) -> tuple[str, Any]:
        """(kid, private key) of the current key."""
        if self.current_kid is None or not self.current_wrapped:
            raise KeyRefused("no current signing key")
        if self._private is None or self._private[0] != self.current_kid:
            self._private = (self.current_kid, unwrap(fernet, self.current_wrapped))
        return self._private

    def verification_key(self, kid: Any) -> Any:
        """The public key for `kid`; KeyRefused when unknown or revoked."""
        if not isinstance(kid, str) or not kid:
            raise KeyRefused("the token names no key (kid)")
        entry = self.keys.get(kid)
        if entry is None:
            raise KeyRefused(f"unknown signing key {kid!r}")
        if entry["state"] == REVOKED:
            raise KeyRefused(f"signing key {kid!r} is revoked")
        return entry["public"]

    def revoked(self) -> set[str]:
        return {kid for kid, e in self.keys.items() if e["state"] == REVOKED}

    def describe(self) -> list[dict[str, Any]]:
        return [{"kid": kid, "alg": e["alg"], "state": e["state"], "created_at": e["created_at"],
                 "revoked_at": e["revoked_at"]} for kid, e in self.keys.items()]


__all__ = ["ALGORITHM", "CURRENT", "KeyRefused", "REVOKED", "RETIRED", "Ring", "SQL_INSERT_KEY", "SQL_LOCK_RING",
           "SQL_RETIRE_CURRENT", "SQL_REVOKE_ALL", "SQL_RING", "new_key", "unwrap", "wrapper"]
