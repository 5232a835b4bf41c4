"""Drill activities (Chaos Toolkit actions, also called by Gherkin steps): checklist evidence, workload, validation."""

from __future__ import annotations

import time
from typing import Any

from harness import backup
from harness.backup import catalog, retention
from harness.checks import integrity
from harness.core import measure
from harness.drill import detector
from harness.drill import session as drill_session
from harness.errors import HarnessError
from harness.lab.manager import Lab
from harness.safety import guard
from harness.targets import _lab as tl
from harness.targets.postgres import probes as pg
from harness.workload import Workload, find_primary_dsn

__all__ = [
    "check_pre_test", "start_workload", "stop_workload", "validate_integrity", "observe_failover",
    "observe_failback", "take_scheduled_backup", "observe_pre_test", "replica_lag_within_plan",
]


def _topology(configuration: dict | None) -> dict[str, Any]:
    from harness.targets import _lab

    return _lab.resolve(configuration).lab.topology()


def _lab(configuration: dict | None):
    return Lab(tl.state_dir(configuration))


def take_scheduled_backup(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Take the lab's 'nightly' logical backup into S3 (the lab has no scheduler; real targets have one).

    A dry run writes nothing: the backup is recorded as planned."""
    if guard.is_dry_run(configuration):
        s = drill_session.current(required=False)
        if s is not None:
            s.event("note", "scheduled backup planned, not taken (dry run: nothing written to S3)", dry_run=True)
        return {"dry_run": True, "taken": False}
    topo = _topology(configuration)
    lab = _lab(configuration)
    info = catalog.take(lab, topo, backup.DEFAULT_LAYER, endpoint_url=topo["s3"]["endpoint_url"],
                        bucket=topo["s3"].get("bucket", "kerp-backups"), plan=guard.plan(configuration))
    s = drill_session.current(required=False)
    if s is not None:  # the backup, its DR-region copy and the retention it applied
        s.event("note", "scheduled backup taken", **info)
    return info


def check_pre_test(max_backup_age_s: float = 25 * 3600, configuration: dict | None = None,
                   secrets: dict | None = None) -> dict[str, Any]:
    """Evidence for the plan's pre_test items: recent backups, replication lag, DR capacity; snapshot for integrity.

    The replication lag is measured once per run before its fault: a steady-state probe of this run that
    measured it already (`replica_lag_within_plan`) is the evidence, so the two cannot disagree."""
    s = drill_session.current()
    if guard.dry_run_elsewhere(configuration):
        for item in PRE_TEST_OBSERVERS:
            s.observe(item, None, f"dry run against {s.environment.name if s.environment else 'a real environment'}: "
                                  "not observed (nothing is sent)")
        return {"dry_run": True}
    results = observe_pre_test(PRE_TEST_OBSERVERS, max_backup_age_s, configuration=configuration)
    # snapshot of the tables the workload never writes, for the integrity check afterwards
    import psycopg

    with psycopg.connect(find_primary_dsn(s.topology or _topology(configuration)), connect_timeout=3) as conn:
        s.snapshot = integrity.take_snapshot(conn, integrity.SNAPSHOT_TABLES)
    return results


def observe_pre_test(items, max_backup_age_s: float = 25 * 3600,
                     configuration: dict | None = None) -> dict[str, Any]:
    """Observe the given pre_test items (ids of PRE_TEST_OBSERVERS) into the running session; {item: ok}."""
    s = drill_session.current()
    topo = _topology(configuration)
    s.topology = topo
    results: dict[str, Any] = {}
    for item in items:
        observer = PRE_TEST_OBSERVERS.get(item)
        if observer is None:
            continue
        results[item] = observer(s, topo, configuration, max_backup_age_s)
    return results


def _observe_backups(s, topo: dict[str, Any], configuration: dict | None, max_backup_age_s: float) -> bool | None:
    """The plan's rule (`retention.recent_verdict`: the item's layer, count and threshold), then the newest verified.

    `max_backup_age_s` is no longer read: the layer's frequency plus the item's threshold is the limit."""
    bucket = topo["s3"].get("bucket", "kerp-backups")
    try:
        verdict = retention.recent_verdict(guard.plan(configuration), "backups_recent",
                                           endpoint_url=topo["s3"]["endpoint_url"], bucket=bucket)
        ok, observed = verdict.ok, verdict.observed
        if verdict.ok and verdict.newest is not None:  # a backup that exists but does not restore is no backup
            v = backup.verify(verdict.newest.key, pg_runtime=_lab(configuration).pg_runtime(),
                              endpoint_url=topo["s3"]["endpoint_url"], bucket=bucket)
            ok = v.ok
            observed += "; newest verified (sha256, metadata, pg_restore --list)" if v.ok else \
                f"; newest NOT restorable: {v.reason}"
    except HarnessError as e:
        ok, observed = False, str(e)
    if guard.is_dry_run(configuration) and not ok:  # the scheduled backup was only planned: not evidence
        ok, observed = None, f"dry run: the scheduled backup was not taken ({observed})"
    s.observe("backups_recent", ok, observed)
    return ok


def _replica_lag_threshold(configuration: dict | None) -> float:
    item = guard.plan(configuration).checklist_item("replica_lag")  # the session's plan, overrides included
    return float(item.threshold_s or 60.0)


def _measure_replica_lag(configuration: dict | None) -> tuple[bool, str]:
    try:
        r = pg.replica_lag(_replica_lag_threshold(configuration), region="dr", configuration=configuration)
        return bool(r["ok"]), str(r["observed"])
    except Exception as e:  # a probe failure is evidence, not a crash
        return False, f"cannot measure replica lag: {e}"


def _observe_replica_lag(s, topo: dict[str, Any] | None = None, configuration: dict | None = None,
                         max_backup_age_s: float = 0) -> bool:
    """The replica_lag item: measured once per run before its first fault, then that observation is reused."""
    seen = s.observations.get("replica_lag")
    if seen is not None and s.fault_t is None:
        return bool(seen["ok"])
    ok, observed = _measure_replica_lag(configuration)
    s.observe("replica_lag", ok, observed)
    return ok


def _observe_dr_capacity(s, topo: dict[str, Any], configuration: dict | None, max_backup_age_s: float) -> bool:
    """The dr_cluster_ready item: the DR region can be scaled (slots exist, supervisor answers)."""
    import httpx

    try:
        regions = httpx.get(topo["supervisor"]["url"] + "/regions", timeout=2).json()
        dr = regions.get("dr", {})
        slots = int(dr.get("slots") or 0)  # what the DR region's supervisor says it can run
        primary_running = len([r for r in regions.get("primary", {}).get("replicas", []) if r.get("alive")])
        ok = slots >= max(2, primary_running)
        observed = (f"DR region: {dr.get('desired', 0)} replica(s) running, scalable to {slots} "
                    f"(primary runs {primary_running})")
    except Exception as e:
        ok, observed = False, f"DR region capacity unknown: {e}"
    s.observe("dr_cluster_ready", ok, observed)
    return ok


#: pre_test item id -> its observer (session, topology, configuration, max backup age)
PRE_TEST_OBSERVERS = {"backups_recent": _observe_backups, "replica_lag": _observe_replica_lag,
                      "dr_cluster_ready": _observe_dr_capacity}


def replica_lag_within_plan(configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """Steady-state probe: the DR standby replays within the plan's replica_lag threshold. Before the run's first
    fault it is the pre_test item's one measurement (recorded as its evidence, reused by `check_pre_test`); a
    replica_lag declared degraded by the scenario (lab only) does not fail it. After the fault: measured anew."""
    from harness.drill import pretest

    s = drill_session.current(required=False)
    if s is None or s.fault_t is not None:
        return _measure_replica_lag(configuration)[0]
    if _observe_replica_lag(s, configuration=configuration):
        return True
    return pretest.refusal_of_observations(s, configuration) is None


def start_workload(writers: int = 4, rate_per_s: float | None = None, probe_interval_s: float = 0.1,
                   configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Start the ledger writers and the per-service probes through the global endpoint."""
    s = drill_session.current()
    cfg = configuration or {}
    if guard.dry_run_elsewhere(configuration):
        s.event("note", "workload planned, not started (dry run against a real environment: nothing is sent)",
                dry_run=True)
        return {"dry_run": True, "writers": writers}
    topo = _topology(configuration)
    s.topology = topo
    wl = Workload.from_topology(topo, s.timeline, run_id=s.run_id, writers=int(cfg.get("drill_writers", writers)),
                                rate_per_s=cfg.get("drill_write_rate", rate_per_s),
                                probe_interval_s=float(cfg.get("drill_probe_interval_s", probe_interval_s)))
    s.workload = wl.start()
    s.event("note", "workload started", writers=writers, rate_per_s=rate_per_s, probe_interval_s=probe_interval_s)
    detector.start(s, configuration)  # the disaster-level detector samples while the workload runs
    return {"writers": writers, "rate_per_s": rate_per_s}


def not_recovered(s, services: list[str], consecutive: int = 3) -> list[str]:
    """Services without recovery after the fault yet, judged as the report judges RTO (`core.measure.rto`)."""
    fault_t = s.fault_t
    if fault_t is None:
        return []
    probes = s.timeline.of_kind("probe")
    return [svc for svc in services if measure.rto(probes, fault_t, svc, consecutive=consecutive).rto_s is None]


def stop_workload(recovery_timeout_s: float = 60.0, settle_s: float = 1.0, consecutive: int = 3,
                  configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Wait until every probed service recovered (or the timeout), stop the workload, read the final state.

    Recovery is judged as the report judges RTO (`core.measure.rto`: a streak that begins after the
    first failed probe after the fault). The final read covers every data set of the run
    (`Workload.final_read_all`): vouchers in `s.final_keys` (as before) and every set by op f in
    `s.final_keys_by_f`.
    """
    s = drill_session.current()
    if s.workload is None and guard.dry_run_elsewhere(configuration):
        return {"dry_run": True}
    if s.workload is None:
        raise HarnessError("stop_workload: the workload was never started in this drill")
    wl = s.workload
    fault_t = s.fault_t
    services = list(wl.probes.services) if wl.probes is not None else []
    deadline = time.monotonic() + recovery_timeout_s

    def wait_recovered() -> list[str]:
        while fault_t is not None and services:
            left = not_recovered(s, services, consecutive)
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)
        return []

    wait_recovered()
    time.sleep(settle_s)
    detector.stop(s)
    # a probe may have failed for the first time while settling or while the detector stopped (a loaded machine: a
    # probe timing out): the workload stops only once that service showed its recovery streak again, else the
    # report would call it never recovered (a fresh deadline for that late failure)
    deadline = time.monotonic() + recovery_timeout_s
    waiting = wait_recovered()
    if waiting:
        s.note(f"services not recovered within {recovery_timeout_s:.0f} s: {', '.join(waiting)}")
    counts = wl.stop()
    s.event("note", "workload stopped", **{k: v for k, v in counts.items() if isinstance(v, (dict, int))})
    topo = _topology(configuration)
    dsn = find_primary_dsn(topo)
    s.final_read_region = next((r for r, v in topo["regions"].items()
                                if dsn in (v["postgres"]["dsn"], (v.get("postgres_standby") or {}).get("dsn"))), None)
    by_f = wl.final_read_all(s.run_id, dsn=dsn)
    s.final_keys = by_f["write"]
    s.final_keys_by_f = by_f
    for f, error in sorted(wl.final_read_errors.items()):
        s.note(f"final read of {f} failed, its RPO is not measured: {error}")
    reissued = list(getattr(wl.probes, "reissued", None) or [])
    if reissued:
        s.note(f"{len(reissued)} tax invoice number(s) re-issued to a new invoice after the failover "
               f"(the first one was lost): {', '.join(reissued[:10])}")
    s.event("check", "final read", region=s.final_read_region, present=len(s.final_keys),
            present_by_f={f: len(v) for f, v in by_f.items()}, regions=dict(wl.final_read_regions),
            errors=dict(wl.final_read_errors))
    return {"not_recovered": waiting, "present": len(s.final_keys), "final_read_region": s.final_read_region,
            "present_by_f": {f: len(v) for f, v in by_f.items()}}


def validate_integrity(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Run every integrity check on the current primary; results go to the report (a finding never raises)."""
    import psycopg

    s = drill_session.current()
    if guard.dry_run_elsewhere(configuration):
        s.event("note", "integrity checks planned, not run (dry run against a real environment)", dry_run=True)
        return {"dry_run": True, "checks": 0, "failed": []}
    topo = _topology(configuration)
    dsn = find_primary_dsn(topo)
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        results = integrity.run_all(conn, snapshot=s.snapshot, rt=_lab(configuration).pg_runtime(), dsn=dsn)
    # keep results of earlier checks of other databases in this run (e.g. a restored backup)
    s.integrity = [i for i in s.integrity if i["check"].startswith("restored: ")] + [r.to_dict() for r in results]
    for r in results:
        s.event("check", f"integrity: {r.check}", status=r.status, details=r.details)
    failed = [r.check for r in results if r.status == "fail"]
    return {"checks": len(results), "failed": failed}


def observe_failover(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """during_test evidence: failover started, traffic on DR, /health 200 through the global endpoint
    (a dry run injected nothing: its items are skipped)."""
    import httpx

    s = drill_session.current()
    if guard.is_dry_run(configuration):
        for item in ("failover_started", "traffic_switched", "service_health"):
            s.observe(item, None, "dry run: nothing injected")
        return {"dry_run": True}
    topo = _topology(configuration)
    fo = [e for e in s.timeline.of_kind("failover")]
    started = next((e for e in fo if e.event in ("detected", "approved", "promoted")), None)
    s.observe("failover_started", started is not None,
              f"runbook started: {started.event} at +{started.t - (s.fault_t or started.t):.2f} s after the fault"
              if started else "no failover event recorded")
    state = httpx.get(topo["router"]["url"] + "/_router/state", timeout=2).json()
    active = state.get("active_region")
    flips = [f for f in state.get("flips", []) if f.get("to") == active]
    s.observe("traffic_switched", active == "dr",
              f"global endpoint active region: {active}" + (f" (flipped: {flips[-1].get('reason')})" if flips else ""))
    r = httpx.get(topo["router"]["url"] + "/health", timeout=3)
    s.observe("service_health", r.status_code == 200,
              f"GET /health -> HTTP {r.status_code} from region {r.headers.get('x-drill-region')}")
    return {"active_region": active, "health": r.status_code}


def observe_failback(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """post_test evidence: traffic back on the primary region and healthy (skipped in a dry run)."""
    import httpx

    s = drill_session.current()
    if guard.is_dry_run(configuration):
        s.observe("failback", None, "dry run: nothing injected")
        return {"dry_run": True}
    topo = _topology(configuration)
    state = httpx.get(topo["router"]["url"] + "/_router/state", timeout=2).json()
    r = httpx.get(topo["router"]["url"] + "/health", timeout=3)
    ok = state.get("active_region") == "primary" and r.status_code == 200
    s.observe("failback", ok, f"active region {state.get('active_region')}, /health HTTP {r.status_code} "
                              f"from {r.headers.get('x-drill-region')}")
    return {"active_region": state.get("active_region"), "health": r.status_code}
