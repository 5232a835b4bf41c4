"""The DR failover runbook in catalog order (detect, approve, data layer, services, verify) and the disaster-level detector."""

from __future__ import annotations

import time
from typing import Any, Callable

from harness.core.safety import plan_disaster_level
from harness.safety import context as run_context
from harness.safety import guard
from harness.errors import HarnessError, LabError
from harness.failover.failback import fail_back
from harness.failover.planes import RegionPlanes, planes_for
from harness.targets import _lab, toxiproxy
from harness.targets.app import ops as app_ops
from harness.targets.kubernetes import ops as k8s_ops
from harness.targets.kubernetes import probes as k8s_probes
from harness.targets.postgres import ops as pg_ops
from harness.targets.redis import ops as rd_ops
from harness.targets.router import ops as router_ops

__all__ = ["detect_level", "fail_over"]

GATE = "dr_region_switch"
DR_REPLICAS = 2


class _Clock:
    """Phase timer: seconds since the start of the runbook and since the fault."""

    def __init__(self, fault_t: float | None) -> None:
        self.t0 = time.time()
        self.fault_t = fault_t
        self.phases: dict[str, float] = {}
        self._last = self.t0

    def lap(self, phase: str) -> float:
        now = time.time()
        self.phases[phase] = round(now - self._last, 3)
        self._last = now
        return self.phases[phase]

    def since_fault(self, t: float | None = None) -> float | None:
        return round((t or time.time()) - self.fault_t, 3) if self.fault_t else None


def _event(configuration: dict | None, event: str, t: float | None = None, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.timeline.append("failover", event, data, t=t)


def _region_checks(t: _lab.LabTarget, region: str, http: Any) -> dict[str, bool]:
    """One poll of `region`'s data layer and of the global endpoint."""
    def db() -> bool:
        with t.pg(region, timeout=1) as c:
            return pg_ops.writable(c)

    def redis() -> bool:
        with t.redis(region, timeout=0.5) as c:
            return rd_ops.role(c) == "master"

    return {"database_primary": bool(_lab.quiet(db, False)), "redis_primary": bool(_lab.quiet(redis, False)),
            "global_endpoint": app_ops.global_health(http, t.router_url)["ok"]}


def _detect(t: _lab.LabTarget, region: str, http: Any, needed: int, timeout_s: float, interval_s: float) -> dict:
    """Poll until `needed` consecutive polls find `region` failed (any check failing); HarnessError on timeout."""
    deadline = time.monotonic() + timeout_s
    consecutive, polls = 0, 0
    last: dict[str, bool] = {}
    while True:
        last = _region_checks(t, region, http)
        polls += 1
        consecutive = consecutive + 1 if not all(last.values()) else 0
        if consecutive >= needed:
            return {"checks": last, "consecutive": consecutive, "polls": polls}
        if time.monotonic() >= deadline:
            raise HarnessError(f"failure of region {region!r} not confirmed within {timeout_s:.0f} s "
                               f"(last checks: {last}); not failing over")
        time.sleep(interval_s)


def _verify(http: Any, base_url: str, service: str, region: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    attempts = 0
    while True:
        attempts += 1
        res = app_ops.check_service(http, base_url, service)
        if res["ok"] and res.get("region") in (region, None):
            return {**res, "attempts": attempts}
        if time.monotonic() >= deadline:
            raise LabError(f"service {service!r} not verified through the global endpoint within {timeout_s:.0f} s: "
                           f"{res.get('error') or res.get('status')}")
        time.sleep(0.2)


def fail_over(to_region: str = "dr", detect_timeout_s: float = 30, configuration: dict | None = None,
              secrets: dict | None = None) -> dict:
    """Run the DR runbook towards `to_region`: detect, approve (dr_region_switch), promote, scale, switch, verify."""
    cfg = configuration or {}
    from_region = _lab.other(to_region)
    plan = guard.plan(configuration)
    order = list(plan.recovery_order)
    s = run_context.of(configuration)
    if guard.is_dry_run(configuration):
        steps = ["detect", f"approve {GATE}", f"promote postgresql {to_region}", f"promote redis {to_region}",
                 f"scale apps {to_region} to {DR_REPLICAS}", f"switch traffic to {to_region}",
                 f"fence {from_region} (router pinned, apps 0, postgresql stopped if writable)",
                 *[f"verify {x}" for x in order]]
        _event(configuration, "planned", dry_run=True, to_region=to_region, steps=steps)
        out: dict[str, Any] = {"dry_run": True, "to_region": to_region, "steps": steps}
        if guard.dry_run_elsewhere(configuration):
            out["calls"] = _dry_run_planes(from_region, to_region, configuration)
        return out
    t = _lab.resolve(configuration)
    clock = _Clock(s.fault_t if s else None)
    needed = int(cfg.get("drill_detect_checks") or (plan.health_check.failure_threshold if plan.health_check else 3))
    interval = float(cfg.get("drill_detect_interval_s") or 0.5)
    switch_timeout = float(cfg.get("drill_switch_timeout_s") or 20)
    verify_timeout = float(cfg.get("drill_verify_timeout_s") or 30)
    services: list[dict[str, Any]] = []
    with t.http(timeout=3.0) as http:
        planes = planes_for(t, http, configuration)
        # 1. detect
        det = _detect(t, from_region, http, needed, float(detect_timeout_s), interval)
        clock.lap("detect")
        _event(configuration, "detected", region=from_region, since_fault_s=clock.since_fault(), **det)
        # 2. approve the DR region switch
        decision = guard.approve(GATE, "fail_over", configuration, regions=(to_region,))
        clock.lap("approve")
        _event(configuration, "approved", gate=GATE, reason=decision.reason)
        # before the first change: a crash from here on leaves `drill recover` a way back (fail_back)
        inj = guard.inject("fail_over", f"region:{to_region}", revert=(fail_back, {"to_region": from_region}),
                           gate=GATE, regions=(to_region,), components=("postgresql", "redis", "app", "router"),
                           configuration=configuration, details={"from_region": from_region})
        # 3. data layer: PostgreSQL, then Valkey
        pg = planes.data.promote_database(to_region)
        _event(configuration, "promoted", component="postgresql", region=to_region, seconds=pg["seconds"],
               already_primary=pg["already_primary"], via=planes.data.via)
        rd = planes.data.promote_cache(to_region)
        _event(configuration, "promoted", component="redis", region=to_region, already_master=rd["already_master"],
               via=planes.data.via)
        clock.lap("promote")
        # 4. authentication / api-gateway: scale the DR apps, traffic follows the global endpoint's health checks
        planes.apps.scale(to_region, DR_REPLICAS)
        _event(configuration, "scaled", region=to_region, replicas=DR_REPLICAS, via=planes.apps.via)
        clock.lap("scale")
        flip = planes.traffic.switch(to_region, switch_timeout)
        clock.lap("switch")
        _event(configuration, "traffic_switched", t=flip.get("at_epoch"), region=to_region, mode=flip.get("mode"),
               reason=flip.get("reason"), via=planes.traffic.via)
        # 5. fence the old region: traffic pinned to the new one, its apps stay at 0, its database cannot write
        fence = _fence(planes, from_region, to_region)
        clock.lap("fence")
        _event(configuration, "fenced", region=from_region, **fence)
        # 6. verify every service through the global endpoint, in recovery order
        for name in order:
            res = _verify(http, t.router_url, name, to_region, verify_timeout)
            services.append(res)
            _event(configuration, "service_verified", service=name, status=res["status"], region=res.get("region"),
                   latency_s=res["latency_s"], attempts=res["attempts"])
        clock.lap("verify")
    total = round(time.time() - clock.t0, 3)
    return {"from_region": from_region, "to_region": to_region, "phases_s": clock.phases, "total_s": total,
            "since_fault_s": clock.since_fault(), "traffic_switched_at": flip.get("at"),
            "detect": det, "postgres": pg, "services": services, "recovery_order": order, "fence": fence,
            "fault_id": inj.entry.id if inj.entry else None}


def _dry_run_planes(from_region: str, to_region: str, configuration: dict | None) -> dict[str, Any]:
    """A dry run against a real environment: every plane action of the runbook makes its mutating call through the
    run's intercepted clients (recorded, never sent), in runbook order; no wait, no lab."""
    import httpx

    with httpx.Client(timeout=3.0, trust_env=False) as http:
        planes = planes_for(None, http, configuration)
        out = {"planes": planes.describe(),
               "promote_database": planes.data.promote_database(to_region),
               "promote_cache": planes.data.promote_cache(to_region),
               "scale": planes.apps.scale(to_region, DR_REPLICAS, wait=False),
               "switch": planes.traffic.switch(to_region, 0), "fence": _fence(planes, from_region, to_region)}
    _event(configuration, "planned_calls", dry_run=True, planes=out["planes"])
    return out


def _fence(planes: RegionPlanes, region: str, serving: str) -> dict[str, Any]:
    """Keep the failed region out after the switch: the global endpoint pinned to `serving` (the gate is
    approved), `region`'s apps scaled to 0, and its database kept from writing. Returns what was done."""
    out: dict[str, Any] = {"router": planes.traffic.pin(serving)}
    planes.apps.scale(region, 0, wait=False)
    out["apps"] = 0
    out.update(planes.data.fence_database(region, serving))
    return out


# --- disaster level -------------------------------------------------------------------------------
def _indicators(t: _lab.LabTarget, http: Any, lag_target_s: float,
                configuration: dict | None = None) -> dict[str, tuple[bool | None, str]]:
    out: dict[str, tuple[bool | None, str]] = {}
    try:
        active = router_ops.state(http, t.router_url)["active_region"]
    except Exception:
        active = "primary"
    standby = _lab.other(active)

    def check(name: str, fn: Callable[[], tuple[bool | None, str]]) -> None:
        try:
            out[name] = fn()
        except Exception as e:
            out[name] = (False, str(e).splitlines()[0] if str(e) else type(e).__name__)

    def db_primary() -> tuple[bool, str]:
        with t.pg(active, timeout=1) as c:
            ok = pg_ops.writable(c)
        return ok, f"postgresql {active} {'writable' if ok else 'read-only'}"

    def db_replica() -> tuple[bool | None, str]:
        with t.pg(active, timeout=1) as p:
            with t.pg(standby, timeout=1) as sb:
                if not pg_ops.in_recovery(sb):
                    return False, f"postgresql {standby} is not a standby"
                lag = pg_ops.lag_seconds(p, sb, f"drill_{standby}")
        if lag is None:
            return False, f"postgresql {standby} is not streaming"
        return lag <= lag_target_s, f"postgresql {standby} lag {lag:.3f} s (target {lag_target_s:.0f} s)"

    def redis_cluster() -> tuple[bool, str]:
        with t.redis(active, timeout=1) as m:
            mrole = rd_ops.role(m)
        with t.redis(standby, timeout=1) as r:
            info = _lab.quiet(lambda: rd_ops.replication(r), {})
        ok = mrole == "master" and info.get("role") == "slave" and info.get("master_link_status") == "up"
        return ok, f"valkey {active} {mrole}, {standby} {info.get('role', 'down')} link {info.get('master_link_status')}"

    def nodes() -> tuple[bool, str]:
        st = app_ops.regions(http, t.supervisor_url)
        parts, ok = [], True
        for r, v in st.items():
            alive = len(app_ops.alive_replicas(st, r))
            parts.append(f"{r} {alive}/{v['desired']}")
            ok = ok and alive >= v["desired"]
        ok = ok and len(app_ops.alive_replicas(st, active)) > 0
        return ok, "app replicas alive " + ", ".join(parts)

    def kube_nodes() -> tuple[bool, str]:
        """lab-cloud: from the Kubernetes API, every node Ready and schedulable, pods ready per region."""
        parts, ok = [], True
        with k8s_ops.cluster(configuration, lab=t) as c:
            for r in _lab.REGIONS:
                rd = k8s_probes.region_readiness(c, r)
                parts.append(f"{r} nodes {rd['nodes_ready']}/{rd['nodes']} pods {rd['pods_ready']}/{rd['desired']}")
                ok = ok and rd["nodes_ready"] == rd["nodes"] and rd["pods_ready"] >= rd["desired"]
                ok = ok and (r != active or rd["pods_ready"] > 0)
        return ok, "kubernetes ready: " + ", ".join(parts)

    def api() -> tuple[bool, str]:
        h = app_ops.global_health(http, t.router_url)
        return h["ok"], f"global endpoint /health {h['status']}"

    def external() -> tuple[bool, str]:
        p = toxiproxy.proxy(http, t.toxiproxy_url, "popbill")
        if not p.get("enabled"):
            return False, "popbill proxy disabled"
        r = http.get(t.popbill_proxy_url + "/health", timeout=2.0)
        return r.status_code == 200, f"popbill via fault proxy {r.status_code}"

    kube = str((configuration or {}).get("drill_environment_kind") or "lab") == "lab-cloud"
    for name, fn in (("database_primary", db_primary), ("database_replica", db_replica),
                     ("redis_cluster", redis_cluster), ("kubernetes_nodes", kube_nodes if kube else nodes),
                     ("api_health", api), ("external_apis", external)):
        check(name, fn)
    return out


def detect_level(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Current disaster level (plan section 3.2) from real indicator checks, and the checks behind it."""
    plan = guard.plan(configuration)
    t = _lab.resolve(configuration)
    lag_target = next((r.lag_target_s for r in plan.replication if r.component == "database"), 60.0)
    with t.http(timeout=2.0) as http:
        ind = _indicators(t, http, lag_target, configuration)
    known = {i.name for i in plan.indicators}
    decision = plan_disaster_level(plan, {k: v[0] for k, v in ind.items() if k in known})
    return {**decision.to_dict(),
            "indicators": {k: {"healthy": v[0], "detail": v[1]} for k, v in ind.items()}}
