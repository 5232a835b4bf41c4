"""Read-only probes of authentication: a token's acceptance by every replica, sessions in Redis, security audit
entries, the key ring of the database and of each replica."""

from __future__ import annotations

from typing import Any

import redis

from harness.targets import _lab
from harness.targets.auth import ops
from harness.workload import find_primary_dsn, find_primary_redis

__all__ = ["audit_entries_since", "key_rings", "sessions_count", "signing_keys", "token_accepted"]


def token_accepted(token: str, configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """GET /auth/me with `token` on every live replica of both regions (not through the router, which would pick
    one). "accepted": every replica answered 200; "refused": every replica answered 401."""
    t = _lab.resolve(configuration)
    with t.http(timeout=3.0) as http:
        statuses = {url: ops.me_status(http, url, token) for url in ops.replica_urls(http, t.supervisor_url)}
    values = list(statuses.values())
    return {"accepted": bool(values) and all(v == 200 for v in values),
            "refused": bool(values) and all(v == 401 for v in values), "replicas": statuses}


def sessions_count(configuration: dict | None = None, secrets: dict | None = None) -> int:
    """The number of `session:*` keys on the Redis that is master now."""
    t = _lab.resolve(configuration)
    client = redis.Redis.from_url(find_primary_redis(t.lab.topology()), socket_timeout=5, decode_responses=True)
    try:
        return sum(1 for _ in client.scan_iter("session:*", count=1000))
    finally:
        client.close()


def audit_entries_since(t: float, configuration: dict | None = None, secrets: dict | None = None) -> list[dict]:
    """Security audit entries (entity signing_key or session) written at or after epoch `t`, on the primary."""
    lab = _lab.resolve(configuration)
    with _lab.pg_connect(find_primary_dsn(lab.lab.topology())) as conn:
        return ops.audit_since(conn, float(t))


def signing_keys(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, str]:
    """kid -> state (current, retired, revoked) of every signing key, read on the primary database."""
    lab = _lab.resolve(configuration)
    with _lab.pg_connect(find_primary_dsn(lab.lab.topology())) as conn:
        return ops.key_states(conn)


def key_rings(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Each live replica's cached key ring (current kid, age, key states), through the ops API."""
    t = _lab.resolve(configuration)
    token = ops.ops_token(t.lab.state)
    with t.http(timeout=3.0) as http:
        return {url: ops.ring_view(http, url, token) for url in ops.replica_urls(http, t.supervisor_url)}
