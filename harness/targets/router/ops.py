"""Region router admin API calls on an httpx client passed in."""

from __future__ import annotations

from typing import Any

from harness.errors import LabError


def _json(r: Any, what: str) -> Any:
    if r.status_code >= 400:
        raise LabError(f"router {what}: HTTP {r.status_code} {r.text.strip()[:200]}")
    return r.json() if r.content else None


def state(http: Any, router_url: str) -> dict[str, Any]:
    return _json(http.get(f"{router_url}/_router/state"), "GET /_router/state")


def set_active(http: Any, router_url: str, region: str) -> Any:
    return _json(http.post(f"{router_url}/_router/active", json={"region": region}), f"flip to {region!r}")


def clear_override(http: Any, router_url: str) -> Any:
    return _json(http.delete(f"{router_url}/_router/override"), "DELETE /_router/override")


def last_flip_to(st: dict[str, Any], region: str) -> dict[str, Any] | None:
    flips = [f for f in st.get("flips", []) if f.get("to") == region]
    return flips[-1] if flips else None
