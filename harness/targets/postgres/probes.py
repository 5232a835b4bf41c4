"""Read-only PostgreSQL probes: which node is primary, replication lag as time, roles of both regions."""

from __future__ import annotations

from typing import Any

from harness.targets import _lab
from harness.targets.postgres import ops

__all__ = ["is_primary", "replica_lag", "replication_lag_seconds", "replication_lag_within", "roles"]


def is_primary(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """True when PostgreSQL `region` answers and is not in recovery."""
    t = _lab.resolve(configuration)
    return ops.role(lambda: t.pg(region)) == "primary"


def roles(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, str]:
    """{region: "primary" | "standby" | "down"} for both regions."""
    t = _lab.resolve(configuration)
    return {r: ops.role(lambda r=r: t.pg(r)) for r in _lab.REGIONS}


def replication_lag_seconds(region: str = "dr", configuration: dict | None = None,
                            secrets: dict | None = None) -> float | None:
    """Lag of standby `region` behind the other region as seconds; None when it is not replicating."""
    t = _lab.resolve(configuration)
    upstream = _lab.other(region)
    try:
        primary = t.pg(upstream)
    except Exception:
        return None
    with primary:
        if ops.in_recovery(primary):
            return None
        standby: Any = _lab.quiet(lambda: t.pg(region))
        try:
            return ops.lag_seconds(primary, standby, f"drill_{region}")
        finally:
            if standby is not None:
                standby.close()


def replica_lag(threshold_s: float, region: str = "dr", configuration: dict | None = None,
                secrets: dict | None = None) -> dict[str, Any]:
    """The one replication-lag measurement (steady-state probe and pre_test item alike): a commit made now on the
    other region must be replayed by standby `region` within `threshold_s` seconds.

    {"ok", "lag_s" (None when not replicating), "threshold_s", "observed"}; waits at most `threshold_s`."""
    t = _lab.resolve(configuration)
    limit = float(threshold_s)
    primary = _lab.quiet(lambda: t.pg(_lab.other(region)))
    if primary is None:
        return _lag_result(None, limit, f"no standby: the {_lab.other(region)} database does not answer")
    with primary:
        if ops.in_recovery(primary):
            return _lag_result(None, limit, f"no standby: the {_lab.other(region)} database is not a primary")
        standby: Any = _lab.quiet(lambda: t.pg(region))
        try:
            lag, seen = ops.replay_delay(primary, standby, limit)
        finally:
            if standby is not None:
                standby.close()
    return _lag_result(lag, limit, seen)


def _lag_result(lag: float | None, threshold_s: float, seen: str) -> dict[str, Any]:
    ok = lag is not None and lag < threshold_s
    observed = (f"replica lag {lag:.3f} s ({'<' if ok else '>='} threshold {threshold_s:g} s): {seen}"
                if lag is not None else f"{seen} (threshold {threshold_s:g} s)")
    return {"ok": ok, "lag_s": lag, "threshold_s": threshold_s, "observed": observed}


def replication_lag_within(threshold_s: float, region: str = "dr", configuration: dict | None = None,
                           secrets: dict | None = None) -> bool:
    """True when standby `region` replays a commit made now within `threshold_s` seconds (`replica_lag`)."""
    return bool(replica_lag(threshold_s, region, configuration)["ok"])
