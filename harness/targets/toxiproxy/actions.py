"""Guarded fault-proxy actions: latency on a link, cutting a link; each has its named, idempotent rollback."""

from __future__ import annotations

from harness.safety import guard
from harness.targets import _lab
from harness.targets.toxiproxy import ops

__all__ = ["add_latency", "remove_latency", "cut_link", "restore_link", "hold_link", "release_link"]

#: which region's components each lab proxy carries (blast radius)
_REGIONS = {"pg_replication": ("primary", "dr"), "redis_replication": ("primary", "dr"),
            "primary_app_postgres": ("primary",), "primary_app_redis": ("primary",),
            "dr_app_postgres": ("dr",), "dr_app_redis": ("dr",), "popbill": ("primary", "dr")}


def _toxic_name(proxy: str) -> str:
    return f"drill_latency_{proxy}"


def _hold_name(proxy: str) -> str:
    return f"drill_hold_{proxy}"


def add_latency(proxy: str, latency_ms: int = 200, jitter_ms: int = 0, stream: str = "downstream",
                configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Add a latency toxic to a lab proxy (live connections too). Rollback: remove_latency."""
    if latency_ms < 0 or jitter_ms < 0:
        raise ValueError(f"latency_ms and jitter_ms must be >= 0 (got {latency_ms}, {jitter_ms})")
    inj = guard.inject("latency", f"toxiproxy:{proxy}", revert=(remove_latency, {"proxy": proxy}),
                       regions=_REGIONS.get(proxy, ()), components=(proxy,), configuration=configuration,
                       details={"latency_ms": latency_ms, "jitter_ms": jitter_ms, "stream": stream})
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.add_toxic(http, t.toxiproxy_url, proxy, {"name": _toxic_name(proxy), "type": "latency", "stream": stream,
                                                      "attributes": {"latency": latency_ms, "jitter": jitter_ms}})
    return {"proxy": proxy, "latency_ms": latency_ms, "jitter_ms": jitter_ms, "fault_id": inj.entry.id}


def remove_latency(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Remove the latency toxic `add_latency` put on `proxy` (idempotent)."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        removed = ops.remove_toxic(http, t.toxiproxy_url, proxy, _toxic_name(proxy))
    return {"proxy": proxy, "removed": removed,
            "reverted": guard.mark_reverted("latency", f"toxiproxy:{proxy}", configuration)}


def cut_link(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Disable a lab proxy: its link is cut, live connections dropped. Rollback: restore_link."""
    inj = guard.inject("cut_link", f"toxiproxy:{proxy}", revert=(restore_link, {"proxy": proxy}),
                       regions=_REGIONS.get(proxy, ()), components=(proxy,), configuration=configuration)
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.set_enabled(http, t.toxiproxy_url, proxy, False)
    return {"proxy": proxy, "enabled": False, "fault_id": inj.entry.id}


def restore_link(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Enable a lab proxy again (idempotent)."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.set_enabled(http, t.toxiproxy_url, proxy, True)
    return {"proxy": proxy, "enabled": True,
            "reverted": guard.mark_reverted("cut_link", f"toxiproxy:{proxy}", configuration)}


def hold_link(proxy: str, stream: str = "downstream", configuration: dict | None = None,
              secrets: dict | None = None) -> dict:
    """Hold every byte of a lab proxy's `stream` (a `timeout` toxic with timeout 0): the connection stays open,
    nothing is delivered until the toxic goes (the lab's fault proxy then delivers what it held). On
    `pg_replication` the standby stops receiving WAL while the primary goes on committing. Rollback: release_link."""
    if stream not in ("upstream", "downstream"):
        raise ValueError(f"stream must be upstream or downstream, got {stream!r}")
    inj = guard.inject("hold_link", f"toxiproxy:{proxy}", revert=(release_link, {"proxy": proxy}),
                       regions=_REGIONS.get(proxy, ()), components=(proxy,), configuration=configuration,
                       details={"stream": stream, "toxic": "timeout 0"})
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.add_toxic(http, t.toxiproxy_url, proxy, {"name": _hold_name(proxy), "type": "timeout", "stream": stream,
                                                      "attributes": {"timeout": 0}})
    return {"proxy": proxy, "stream": stream, "held": True, "fault_id": inj.entry.id}


def release_link(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Remove the toxic `hold_link` put on `proxy` (idempotent); a connection still open gets what was held."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        removed = ops.remove_toxic(http, t.toxiproxy_url, proxy, _hold_name(proxy))
    return {"proxy": proxy, "removed": removed,
            "reverted": guard.mark_reverted("hold_link", f"toxiproxy:{proxy}", configuration)}
