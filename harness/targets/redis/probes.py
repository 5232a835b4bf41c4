"""Read-only Valkey probes: the role of a region's node."""

from __future__ import annotations

from harness.targets import _lab
from harness.targets.redis import ops

__all__ = ["role", "roles"]


def role(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> str:
    """"master", "slave" or "down" for Valkey `region`."""
    t = _lab.resolve(configuration)
    with t.redis(region, timeout=1) as c:
        return ops.role(c)


def roles(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, str]:
    """{region: role} for both regions."""
    return {r: role(r, configuration, secrets) for r in _lab.REGIONS}
