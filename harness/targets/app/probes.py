"""Read-only K-ERP app probes: health through the global endpoint or of one region's replicas, every service."""

from __future__ import annotations

from typing import Any

from harness.targets import _lab
from harness.targets.app import ops

__all__ = ["all_services_healthy", "health", "replicas"]


def health(region: str | None = None, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """/health through the router (region None), or of every live replica of `region`; "ok" summarises."""
    t = _lab.resolve(configuration)
    with t.http(timeout=2.0) as http:
        if region is None:
            return ops.global_health(http, t.router_url)
        _lab.check_region(region)
        out: list[dict[str, Any]] = []
        for r in ops.alive_replicas(ops.regions(http, t.supervisor_url), region):
            try:
                resp = http.get(r["url"] + "/health")
                out.append({"slot": r["slot"], "url": r["url"], "ok": resp.status_code == 200,
                            "status": resp.status_code})
            except Exception as e:
                out.append({"slot": r["slot"], "url": r["url"], "ok": False, "error": str(e).splitlines()[0]})
        return {"region": region, "ok": bool(out) and all(x["ok"] for x in out), "replicas": out}


def all_services_healthy(configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """True when every catalog service answers one read-only request through the global endpoint."""
    t = _lab.resolve(configuration)
    with t.http(timeout=3.0) as http:
        return all(ops.check_service(http, t.router_url, s, write=False)["ok"] for s in ops.SERVICES)


def replicas(region: str | None = None, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The supervisor's view: desired and live replicas per region (or of `region`)."""
    t = _lab.resolve(configuration)
    with t.http(timeout=2.0) as http:
        state = ops.regions(http, t.supervisor_url)
    return state if region is None else state[_lab.check_region(region)]
