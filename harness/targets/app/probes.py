"""Read-only K-ERP app probes: health through the global endpoint or of one region's replicas, every service."""

from __future__ import annotations

import time
from typing import Any

from harness.core import escalation, outages
from harness.errors import ConfigError, LabError, UsageError
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab
from harness.targets.app import ops

__all__ = ["all_services_healthy", "health", "nodes", "nodes_ready", "replicas", "replicas_rescheduled",
           "services_recovered"]


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


def nodes(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every region's nodes: name, zone, ready, unschedulable, pods."""
    t = _lab.resolve(configuration)
    with t.http(timeout=2.0) as http:
        return ops.nodes(http, t.supervisor_url)


def nodes_ready(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """True when every node of `region` is Ready and schedulable (none lost or cordoned)."""
    _lab.check_region(region)
    t = _lab.resolve(configuration)
    with t.http(timeout=2.0) as http:
        nodes = ops.nodes(http, t.supervisor_url).get(region, [])
    return bool(nodes) and all(n["ready"] and not n["unschedulable"] for n in nodes)


def _level_downtime_s(level: int, configuration: dict | None = None) -> tuple[float, float]:
    """(the plan's expected downtime of disaster level `level`, the same on the drill clock: times
    drill_time_scale)."""
    try:
        lvl, _, drill_s = escalation.level_downtime(guard.plan(configuration), level,
                                                    (configuration or {}).get("drill_time_scale"))
    except ConfigError as e:
        raise UsageError(str(e)) from e
    return lvl.expected_downtime_s, drill_s


def _fault_t(configuration: dict | None) -> tuple[Any, float | None]:
    """(the run context, its first fault's time); None in a dry run, where no fault was injected."""
    s = run_context.of(configuration)
    fault_t = s.fault_t if s is not None else None
    if fault_t is None and guard.is_dry_run(configuration):
        return s, None
    return s, fault_t or time.time()


def _not_judged(s: Any, what: str) -> dict[str, Any]:
    if s is not None:
        s.event("check", f"{what}: not judged", status="skipped", reason="dry run: no fault was injected")
    return {"dry_run": True, "ok": True}


def _services_back(http: Any, t: _lab.LabTarget) -> bool:
    """Every catalog service answers a read-only request through the global endpoint."""
    return all(ops.check_service(http, t.router_url, svc, write=False)["ok"] for svc in ops.SERVICES)


def _back_at(s: Any, t0: float, seen_at: float) -> tuple[float, str]:
    """When every catalog service answered again after the fault at `t0`, and what measured it. The run's own
    service probes on its timeline measure it when they cover every service: the end of each one's last outage
    since the fault (the fault itself for one that never went down). A check that runs only after a slow step (the
    DR standby following the new primary) would otherwise count that step as downtime. Without such probes: the
    time this check saw them all answer (`seen_at`)."""
    probes = s.timeline.of_kind("probe") if s is not None else []
    ends = []
    for svc in ops.SERVICES:
        if not any(p.data.get("service") == svc for p in probes):
            return seen_at, "this check"
        found = outages.outages(probes, svc, t0)
        if any(o.end is None for o in found):
            return seen_at, "this check"
        ends.append(max((o.end for o in found), default=t0))
    return max(ends), "the run's service probes"


def replicas_rescheduled(region: str = "primary", lost_node: str | None = None, level: int = 1,
                         timeout_s: float = 60.0, configuration: dict | None = None,
                         secrets: dict | None = None) -> dict[str, Any]:
    """After a node loss: wait until every service answers through the global endpoint and `region` runs its
    desired replicas, all ready and none on `lost_node`. Records a check event with both times measured from the
    run's first fault (services back, replicas rescheduled) against level `level`'s downtime on the drill clock;
    raises when the replicas were not rescheduled within `timeout_s` (the services' downtime is the objective)."""
    _lab.check_region(region)
    plan_s, drill_s = _level_downtime_s(level, configuration)
    s, t0 = _fault_t(configuration)
    if t0 is None:
        return _not_judged(s, "replicas rescheduled")
    t = _lab.resolve(configuration)
    services_at = rescheduled_at = None
    placed: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with t.http(timeout=3.0) as http:
        while time.monotonic() < deadline and (services_at is None or rescheduled_at is None):
            if services_at is None and _lab.quiet(lambda: _services_back(http, t), False):
                services_at = time.time()
            if rescheduled_at is None:
                state = _lab.quiet(lambda: ops.regions(http, t.supervisor_url), {}).get(region) or {}
                reps = [r for r in state.get("replicas", []) if r.get("alive")]
                if (reps and len(reps) == state.get("desired") and all(r.get("ready") for r in reps)
                        and not any(r.get("node") in (None, lost_node) for r in reps)):
                    rescheduled_at = time.time()
                    placed = [{"slot": r["slot"], "pod": r.get("pod"), "node": r.get("node"), "zone": r.get("zone")}
                              for r in reps]
            time.sleep(0.1)
    measured_by = None
    if services_at is not None:
        services_at, measured_by = _back_at(s, t0, services_at)
    services_s = round(services_at - t0, 3) if services_at is not None else None
    rescheduled_s = round(rescheduled_at - t0, 3) if rescheduled_at is not None else None
    ok = services_s is not None and services_s <= drill_s and rescheduled_s is not None
    out = {"ok": ok, "region": region, "lost_node": lost_node, "services_back_s": services_s,
           "rescheduled_s": rescheduled_s, "services_back_measured_by": measured_by, "replicas": placed, "level": level,
           "expected_downtime_s": plan_s, "drill_downtime_s": drill_s}
    if s is not None:
        s.event("check", f"replicas of {region} rescheduled off {lost_node}: services back after {services_s} s, "
                f"replicas ready after {rescheduled_s} s (level {level} downtime on the drill clock {drill_s:g} s)",
                status="pass" if ok else "fail", **{k: v for k, v in out.items() if k != "ok"}, ok=ok)
    if rescheduled_s is None:
        raise LabError(f"the replicas of {region} were not rescheduled off {lost_node} within {timeout_s:.0f} s")
    return out


def services_recovered(level: int = 2, timeout_s: float = 60.0, configuration: dict | None = None,
                       secrets: dict | None = None) -> dict[str, Any]:
    """Wait until every catalog service answers through the global endpoint; records a check event with the time
    from the run's first fault against level `level`'s downtime on the drill clock. Raises when the services did
    not answer within `timeout_s`."""
    plan_s, drill_s = _level_downtime_s(level, configuration)
    s, t0 = _fault_t(configuration)
    if t0 is None:
        return _not_judged(s, "services recovered")
    t = _lab.resolve(configuration)
    back_at = None
    deadline = time.monotonic() + timeout_s
    with t.http(timeout=3.0) as http:
        while time.monotonic() < deadline:
            if _lab.quiet(lambda: _services_back(http, t), False):
                back_at = time.time()
                break
            time.sleep(0.1)
    measured_by = None
    if back_at is not None:
        back_at, measured_by = _back_at(s, t0, back_at)
    back_s = round(back_at - t0, 3) if back_at is not None else None
    ok = back_s is not None and back_s <= drill_s
    out = {"ok": ok, "services_back_s": back_s, "measured_by": measured_by, "level": level,
           "expected_downtime_s": plan_s, "drill_downtime_s": drill_s}
    if s is not None:
        s.event("check", f"every service answers again after {back_s} s (level {level} downtime on the drill clock "
                f"{drill_s:g} s)", status="pass" if ok else "fail", **{k: v for k, v in out.items() if k != "ok"},
                ok=ok)
    if back_s is None:
        raise LabError(f"the services did not answer through the global endpoint within {timeout_s:.0f} s")
    return out
