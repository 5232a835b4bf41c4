"""Read-only region router probes: the active region and the full routing state."""

from __future__ import annotations

from harness.targets import _lab
from harness.targets.router import ops

__all__ = ["active_region", "router_state"]


def active_region(configuration: dict | None = None, secrets: dict | None = None) -> str:
    """The region the global endpoint sends traffic to."""
    return router_state(configuration, secrets)["active_region"]


def router_state(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """GET /_router/state: active region, mode, health of every target, flips."""
    t = _lab.resolve(configuration)
    with t.http(timeout=2.0) as http:
        return ops.state(http, t.router_url)
