"""HTTP and SQL helpers of the authentication target (clients are passed in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.lab.manager import OPS_TOKEN_FILE
from harness.targets.app import ops as app_ops

SECURITY_ENTITIES = ("signing_key", "session")


def ops_token(state: Path) -> str:
    """The bearer token of the app's ops API (the lab writes it, mode 0600)."""
    try:
        token = (Path(state) / OPS_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise LabError(f"no ops API token in {state} ({e.strerror}): a lab older than the signing-key rotation?") from e
    if not token:
        raise LabError(f"the ops API token file in {state} is empty")
    return token


def replica_urls(http: Any, supervisor_url: str) -> dict[str, str]:
    """URL -> region of every live app replica of both regions."""
    state = app_ops.regions(http, supervisor_url)
    return {r["url"]: region for region in sorted(state) for r in app_ops.alive_replicas(state, region)}


def me_status(http: Any, url: str, token: str) -> int | None:
    """GET /auth/me with `token` on one replica: its HTTP status (None when it does not answer)."""
    try:
        return http.get(url + "/auth/me", headers={"authorization": f"Bearer {token}"}).status_code
    except Exception:  # noqa: BLE001 - a replica that does not answer neither accepts nor refuses
        return None


def login(http: Any, base_url: str, email: str, password: str) -> dict[str, Any]:
    r = http.post(base_url + "/auth/login", json={"email": email, "password": password})
    if r.status_code != 200:
        raise LabError(f"login of {email} through {base_url}: HTTP {r.status_code} {r.text.strip()[:200]}")
    return r.json()


def ring_view(http: Any, url: str, token: str) -> dict[str, Any] | None:
    """One replica's key ring as it holds it now (GET /ops/signing-keys); None when it does not answer."""
    try:
        r = http.get(url + "/ops/signing-keys", headers={"authorization": f"Bearer {token}"})
    except Exception:  # noqa: BLE001
        return None
    return r.json() if r.status_code == 200 else None


def key_states(conn: Any) -> dict[str, str]:
    """kid -> state of every signing key in the database."""
    return dict(conn.execute("SELECT kid, state FROM signing_keys").fetchall())


def current_key(conn: Any) -> tuple[str, str] | None:
    """(kid, wrapped private key) of the current signing key, None when there is none."""
    return conn.execute("SELECT kid, private_wrapped FROM signing_keys WHERE state = 'current'").fetchone()


def audit_since(conn: Any, t: float) -> list[dict[str, Any]]:
    """Security audit entries (signing keys, sessions) written at or after epoch `t`, in seq order."""
    rows = conn.execute(
        "SELECT seq, extract(epoch FROM at)::float8, actor, action, entity, entity_id FROM audit_log"
        " WHERE at >= to_timestamp(%s) AND entity = ANY(%s) ORDER BY seq", (t, list(SECURITY_ENTITIES))).fetchall()
    return [{"seq": r[0], "at": r[1], "actor": r[2], "action": r[3], "entity": r[4], "entity_id": r[5]} for r in rows]
