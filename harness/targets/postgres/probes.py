"""Read-only PostgreSQL probes: which node is primary, replication lag as time, roles of both regions."""

from __future__ import annotations

from typing import Any

from harness.targets import _lab
from harness.targets.postgres import ops

__all__ = ["is_primary", "replication_lag_seconds", "replication_lag_within", "roles"]


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


def replication_lag_within(threshold_s: float, region: str = "dr", configuration: dict | None = None,
                           secrets: dict | None = None) -> bool:
    """True when standby `region` replicates with a lag of at most `threshold_s` seconds."""
    lag = replication_lag_seconds(region, configuration, secrets)
    return lag is not None and lag <= float(threshold_s)
