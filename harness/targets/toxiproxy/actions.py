"""Guarded fault-proxy actions: latency on a link, connection resets, cutting a link, pointing a link at another
upstream; each has its named, idempotent rollback."""

from __future__ import annotations

import time

from harness.errors import UsageError
from harness.safety import guard
from harness.targets import _lab
from harness.targets.toxiproxy import ops

__all__ = ["add_latency", "remove_latency", "add_resets", "remove_resets", "cut_link", "restore_link",
           "partition_link", "redirect_link", "restore_upstream", "hold_link", "release_link"]

#: which region's components each lab proxy carries (blast radius)
_REGIONS = {"pg_replication": ("primary", "dr"), "redis_replication": ("primary", "dr"),
            "primary_app_postgres": ("primary",), "primary_app_redis": ("primary",),
            "dr_app_postgres": ("dr",), "dr_app_redis": ("dr",), "popbill": ("primary", "dr")}


def _toxic_name(proxy: str) -> str:
    return f"drill_latency_{proxy}"


def _inject_toxic(fault: str, proxy: str, toxic: dict, revert, details: dict,
                  configuration: dict | None) -> tuple[bool, dict]:
    """One toxic on a lab proxy as a guarded fault (ledger entry first, then the toxic): (True, {"fault_id"}) once
    it is in place, (False, the guard's answer) when the guard did not let it proceed (dry run, refusal)."""
    inj = guard.inject(fault, f"toxiproxy:{proxy}", revert=(revert, {"proxy": proxy}), regions=_REGIONS.get(proxy, ()),
                       components=(proxy,), configuration=configuration, details=details)
    if not inj.proceed:
        return False, inj.to_dict()
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.add_toxic(http, t.toxiproxy_url, proxy, toxic)
    return True, {"fault_id": inj.entry.id}


def _remove_toxic(fault: str, proxy: str, name: str, configuration: dict | None) -> dict:
    """Remove toxic `name` from a lab proxy (idempotent) and mark the fault reverted."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        removed = ops.remove_toxic(http, t.toxiproxy_url, proxy, name)
    return {"proxy": proxy, "removed": removed, "reverted": guard.mark_reverted(fault, f"toxiproxy:{proxy}", configuration)}


def _check_duration(duration_s: float | None) -> None:
    if duration_s is not None and not duration_s > 0:
        raise UsageError(f"duration_s must be > 0 seconds (got {duration_s!r})")


def _held(result: dict, duration_s: float | None, revert, proxy: str, configuration: dict | None) -> dict:
    """A fault with a window: held `duration_s` inside the activity, then taken away by its own rollback (the
    window is then the fault's, not the drill's overhead between two activities). An interruption while it is
    held leaves the ledger entry active: the run's rollbacks revert it."""
    if duration_s is None or "fault_id" not in result:
        return result
    time.sleep(duration_s)
    result["held_s"] = duration_s
    result["ended"] = revert(proxy=proxy, configuration=configuration)
    return result


def add_latency(proxy: str, latency_ms: int = 200, jitter_ms: int = 0, stream: str = "downstream",
                duration_s: float | None = None, configuration: dict | None = None,
                secrets: dict | None = None) -> dict:
    """Add a latency toxic (latency +/- jitter per chunk) to a lab proxy (live connections too); with
    `duration_s` it is removed again after that window. Rollback: remove_latency."""
    if latency_ms < 0 or jitter_ms < 0:
        raise ValueError(f"latency_ms and jitter_ms must be >= 0 (got {latency_ms}, {jitter_ms})")
    _check_duration(duration_s)
    details = {"latency_ms": latency_ms, "jitter_ms": jitter_ms, "stream": stream}
    toxic = {"name": _toxic_name(proxy), "type": "latency", "stream": stream,
             "attributes": {"latency": latency_ms, "jitter": jitter_ms}}
    done, out = _inject_toxic("latency", proxy, toxic, remove_latency, details, configuration)
    if not done:
        return out
    return _held({"proxy": proxy, "latency_ms": latency_ms, "jitter_ms": jitter_ms, **out}, duration_s,
                 remove_latency, proxy, configuration)


def remove_latency(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Remove the latency toxic `add_latency` put on `proxy` (idempotent)."""
    return _remove_toxic("latency", proxy, _toxic_name(proxy), configuration)


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


def partition_link(proxy: str, duration_s: float = 1.0, configuration: dict | None = None,
                   secrets: dict | None = None) -> dict:
    """A short partition: the lab proxy is cut (live connections dropped, new ones refused) for `duration_s`,
    then restored, in one activity. Rollback: restore_link."""
    _check_duration(duration_s)
    return _held(cut_link(proxy, configuration=configuration), duration_s, restore_link, proxy, configuration)


def restore_link(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Enable a lab proxy again (idempotent)."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.set_enabled(http, t.toxiproxy_url, proxy, True)
    return {"proxy": proxy, "enabled": True,
            "reverted": guard.mark_reverted("cut_link", f"toxiproxy:{proxy}", configuration)}


def _reset_toxic_name(proxy: str) -> str:
    return f"drill_reset_peer_{proxy}"


def add_resets(proxy: str, timeout_ms: int = 0, toxicity: float = 1.0, stream: str = "downstream",
               duration_s: float | None = None, configuration: dict | None = None,
               secrets: dict | None = None) -> dict:
    """Connection resets on a lab proxy: a Toxiproxy `reset_peer` toxic (each affected connection is reset with
    an RST `timeout_ms` after data arrives; `toxicity` is the share of connections affected); with `duration_s`
    it is removed again after that window. Rollback: remove_resets."""
    if timeout_ms < 0 or not 0 <= toxicity <= 1:
        raise UsageError(f"timeout_ms must be >= 0 and toxicity in 0..1 (got {timeout_ms}, {toxicity})")
    _check_duration(duration_s)
    toxic = {"name": _reset_toxic_name(proxy), "type": "reset_peer", "stream": stream, "toxicity": toxicity,
             "attributes": {"timeout": timeout_ms}}
    done, out = _inject_toxic("connection_reset", proxy, toxic, remove_resets,
                              {"timeout_ms": timeout_ms, "toxicity": toxicity, "stream": stream}, configuration)
    if not done:
        return out
    return _held({"proxy": proxy, "timeout_ms": timeout_ms, "toxicity": toxicity, **out}, duration_s, remove_resets,
                 proxy, configuration)


def remove_resets(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Remove the reset_peer toxic `add_resets` put on `proxy` (idempotent)."""
    return _remove_toxic("connection_reset", proxy, _reset_toxic_name(proxy), configuration)


#: the lab component each app-facing proxy normally forwards to: (kind, region)
_HOME = {"primary_app_postgres": ("postgres", "primary"), "primary_app_redis": ("redis", "primary"),
         "dr_app_postgres": ("postgres", "dr"), "dr_app_redis": ("redis", "dr")}


def _upstream(t: _lab.LabTarget, kind: str, region: str) -> str:
    port = t.redis_port(region) if kind == "redis" else t.node(region).port
    return f"127.0.0.1:{port}"


def redirect_link(proxy: str, to_region: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Point an app-facing lab proxy at the same kind of server in `to_region` (as a managed service's primary
    endpoint follows a promoted node: ElastiCache's primary endpoint, RDS's writer endpoint); its live
    connections are dropped and the apps reconnect to the new node. Rollback: restore_upstream."""
    if proxy not in _HOME:
        raise UsageError(f"proxy {proxy!r} is not an app-facing proxy ({', '.join(_HOME)})")
    kind, home = _HOME[proxy]
    t = _lab.resolve(configuration)
    upstream = _upstream(t, kind, _lab.check_region(to_region))
    inj = guard.inject("redirect_link", f"toxiproxy:{proxy}", revert=(restore_upstream, {"proxy": proxy}),
                       regions=tuple(dict.fromkeys((home, to_region))), components=(proxy,),
                       configuration=configuration, details={"to_region": to_region, "upstream": upstream})
    if not inj.proceed:
        return inj.to_dict()
    with t.http() as http:
        ops.set_upstream(http, t.toxiproxy_url, proxy, upstream)
    return {"proxy": proxy, "to_region": to_region, "upstream": upstream, "fault_id": inj.entry.id}


def restore_upstream(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Point an app-facing lab proxy back at its own region's server (idempotent: unchanged when it already is)."""
    if proxy not in _HOME:
        raise UsageError(f"proxy {proxy!r} is not an app-facing proxy ({', '.join(_HOME)})")
    t = _lab.resolve(configuration)
    upstream = _upstream(t, *_HOME[proxy])
    with t.http() as http:
        changed = ops.ensure_upstream(http, t.toxiproxy_url, proxy, upstream)
    return {"proxy": proxy, "upstream": upstream, "changed": changed,
            "reverted": guard.mark_reverted("redirect_link", f"toxiproxy:{proxy}", configuration)}


def _hold_name(proxy: str) -> str:
    return f"drill_hold_{proxy}"


def hold_link(proxy: str, stream: str = "downstream", configuration: dict | None = None,
              secrets: dict | None = None) -> dict:
    """Hold every byte of a lab proxy's `stream` (a `timeout` toxic with timeout 0): the connection stays open,
    nothing is delivered until the toxic goes (the lab's fault proxy then delivers what it held). On
    `pg_replication` the standby stops receiving WAL while the primary goes on committing. Rollback: release_link."""
    if stream not in ("upstream", "downstream"):
        raise UsageError(f"stream must be upstream or downstream, got {stream!r}")
    toxic = {"name": _hold_name(proxy), "type": "timeout", "stream": stream, "attributes": {"timeout": 0}}
    done, out = _inject_toxic("hold_link", proxy, toxic, release_link, {"stream": stream, "toxic": "timeout 0"},
                              configuration)
    if not done:
        return out
    return {"proxy": proxy, "stream": stream, "held": True, **out}


def release_link(proxy: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Remove the toxic `hold_link` put on `proxy` (idempotent); a connection still open gets what was held."""
    return _remove_toxic("hold_link", proxy, _hold_name(proxy), configuration)
