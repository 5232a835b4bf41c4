"""Fault proxy (Toxiproxy HTTP API) calls shared by the targets: enable/disable a proxy, toxics, reset, read state."""

from __future__ import annotations

from typing import Any

from harness.errors import LabError


def _check(r: Any, what: str) -> Any:
    if r.status_code >= 400:
        raise LabError(f"fault proxy refused {what}: HTTP {r.status_code} {r.text.strip()[:200]}")
    return r.json() if r.content else None


def proxy(http: Any, base_url: str, name: str) -> dict[str, Any]:
    return _check(http.get(f"{base_url}/proxies/{name}"), f"reading proxy {name!r}")


def proxies(http: Any, base_url: str) -> dict[str, Any]:
    return _check(http.get(f"{base_url}/proxies"), "listing proxies")


def set_enabled(http: Any, base_url: str, name: str, enabled: bool) -> dict[str, Any]:
    return _check(http.post(f"{base_url}/proxies/{name}", json={"enabled": enabled}),
                  f"{'enabling' if enabled else 'disabling'} proxy {name!r}")


def set_upstream(http: Any, base_url: str, name: str, upstream: str) -> dict[str, Any]:
    """Point a proxy at another upstream ("host:port"); Toxiproxy restarts it, dropping its live connections."""
    return _check(http.post(f"{base_url}/proxies/{name}", json={"upstream": upstream}),
                  f"pointing proxy {name!r} at {upstream}")


def ensure_upstream(http: Any, base_url: str, name: str, upstream: str) -> bool:
    """Point a proxy at `upstream` unless it already is (then its live connections are left alone); True when it
    changed."""
    if proxy(http, base_url, name).get("upstream") == upstream:
        return False
    set_upstream(http, base_url, name, upstream)
    return True


def reset(http: Any, base_url: str) -> None:
    """Enable every proxy and remove every toxic (Toxiproxy POST /reset)."""
    _check(http.post(f"{base_url}/reset"), "reset")


def clean(http: Any, base_url: str) -> bool:
    """True when every proxy is enabled and has no toxic."""
    return all(p.get("enabled") and not p.get("toxics") for p in proxies(http, base_url).values())


def add_toxic(http: Any, base_url: str, name: str, toxic: dict[str, Any]) -> dict[str, Any]:
    return _check(http.post(f"{base_url}/proxies/{name}/toxics", json=toxic),
                  f"adding toxic {toxic.get('name')!r} to proxy {name!r}")


def remove_toxic(http: Any, base_url: str, name: str, toxic_name: str) -> bool:
    """Remove a toxic; False when it was not there (idempotent)."""
    r = http.delete(f"{base_url}/proxies/{name}/toxics/{toxic_name}")
    if r.status_code == 404:
        return False
    _check(r, f"removing toxic {toxic_name!r} from proxy {name!r}")
    return True
