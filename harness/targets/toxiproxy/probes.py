"""Read-only probes of the fault proxy: a proxy's state and toxics, whether the proxy is clean."""

from __future__ import annotations

from typing import Any

from harness.targets import _lab
from harness.targets.toxiproxy import ops

__all__ = ["proxy_state", "all_clean"]


def proxy_state(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """{"name", "enabled", "listen", "upstream", "toxics": [...]} of one lab proxy."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        return ops.proxy(http, t.toxiproxy_url, proxy)


def all_clean(configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """True when every proxy is enabled and carries no toxic."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        return ops.clean(http, t.toxiproxy_url)
