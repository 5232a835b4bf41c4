"""Drill activities of the other cadences: the tabletop walk-through and the semiannual backup-restore test."""

from __future__ import annotations

import time
from typing import Any

import redis

from harness import backup
from harness.backup import replicate
from harness.config import load_plan
from harness.drill import catalog
from harness.drill import session as drill_session
from harness.drill import validate
from harness.drill.profiles import EXPERIMENTS, FEATURES
from harness.errors import HarnessError
from harness.lab.kerp import seed as kseed
from harness.safety import guard
from harness.targets import _lab
from harness.targets.auth import actions as auth_actions
from harness.targets.auth import ops as auth_ops
from harness.targets.auth import probes as auth_probes
from harness.workload import find_primary_dsn, find_primary_redis

__all__ = ["walk_runbook", "backup_restore_drill", "check_breach_contained", "check_fault_isolation"]


def _plan(s):
    return getattr(s, "plan", None) or load_plan(overrides=s.config.get("drill_plan_overrides"))


def walk_runbook(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Tabletop exercise: walk the plan's recovery in catalog order and its escalation matrix, checking that
    every step names something the harness can drive or verify; gaps are recorded, nothing is changed."""
    s = drill_session.current()
    plan = _plan(s)
    gaps: list[str] = []
    for name in plan.recovery_order:
        svc = plan.service(name)
        s.event("note", f"runbook: {name} ({svc.priority}, RTO {svc.rto_s / 60:.0f} min, RPO {svc.rpo_s / 60:.0f} min)",
                dependencies=list(svc.dependencies), steps=list(svc.recovery_steps))
        if not svc.recovery_steps:
            gaps.append(f"{name} has no recovery steps")
    for level in plan.escalation:
        s.event("note", f"escalation level {level.level}: {level.name} within {level.response_time_s / 60:.0f} min",
                authority=list(level.authority))
    for gate in plan.gates:
        s.event("note", f"approval gate: {gate.name}", gate=gate.to_dict())
    # the experiments and features that carry the plan must be executable as written
    paths = sorted(EXPERIMENTS.glob("*.json")) + sorted(FEATURES.glob("*.feature"))
    for result in validate.validate_paths([str(p) for p in paths]):
        if not result.ok:
            gaps.append(f"{result.path}: {'; '.join(result.problems)}")
    # the disaster catalog: every scenario listed with its level, cadences, faults and objective (nothing runs)
    cat = catalog.scan(plan=plan)
    for sc in cat.scenarios:
        s.event("note", f"catalog: {sc.id} (level {sc.level}; {', '.join(sc.cadences) or 'no cadence'}): "
                        f"{sc.title}", faults=list(sc.faults), expected=sc.expected,
                downtime_objective_s=sc.objective["downtime_objective_s"])
    gaps += [f"catalog: {p}" for p in cat.problems if not any(p.split(":")[0] in g for g in gaps)]
    s.event("check", "catalog listed", status="pass" if not cat.problems else "fail",
            scenarios=[sc.id for sc in cat.scenarios], levels={sc.id: sc.level for sc in cat.scenarios})
    for g in gaps:
        s.event("check", f"tabletop gap: {g}", status="fail")
    s.event("check", "tabletop walk-through", status="pass" if not gaps else "fail", gaps=gaps,
            services=list(plan.recovery_order), documents=len(paths))
    if gaps:
        s.harness_error = s.harness_error or f"tabletop found {len(gaps)} gap(s): {gaps[0]}"
    return {"services": list(plan.recovery_order), "escalation_levels": len(plan.escalation), "gaps": gaps}


def backup_restore_drill(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Semiannual simulation: take a backup, copy it to the DR-region bucket, verify the DR copy, restore it into a new database behind the
    data_restore_from_backup gate, run every integrity check on the restored copy, then drop the copy
    (a database this drill created; the live database is never touched)."""
    import psycopg

    s = drill_session.current()
    t = _lab.resolve(configuration)
    topo = t.lab.topology()
    rt = t.lab.pg_runtime()
    endpoint = topo["s3"]["endpoint_url"]
    guard.check("restore_from_backup", "postgres:restore-drill", action="data_restore_from_backup",
                gate="data_restore_from_backup", components=("postgresql",), configuration=configuration)
    t0 = time.time()
    info = backup.create(find_primary_dsn(topo), pg_runtime=rt, endpoint_url=endpoint)
    s.event("note", "backup taken for the restore test", **info.to_dict())
    # the restore reads the DR-region copy: a backup that only lives in the primary region dies with it
    copy = replicate.copy_to_dr(endpoint, info.key, info.sha256)
    s.event("note", "backup copied to the DR region and read back (sha256)", **copy)
    verified = backup.verify(info.key, pg_runtime=rt, endpoint_url=endpoint, bucket=replicate.DR_BUCKET)
    s.event("check", "DR copy verified", status="pass" if verified.ok else "fail", **verified.to_dict())
    if not verified.ok:
        raise HarnessError(f"DR copy of backup {info.key} failed verification: {verified.reason}")
    target_db = f"kerp_restore_{int(t0)}"
    restored = backup.restore(info.key, target_db, dsn=find_primary_dsn(topo), pg_runtime=rt, endpoint_url=endpoint,
                              bucket=replicate.DR_BUCKET, configuration=configuration)
    s.integrity = [dict(r, check=f"restored: {r['check']}") for r in restored.to_dict().get("integrity", [])]
    for r in s.integrity:
        s.event("check", f"integrity: {r['check']}", status=r["status"], details=r.get("details"))
    elapsed = time.time() - t0
    s.event("check", "restore test", status="pass" if restored.ok else "fail", seconds=round(elapsed, 3),
            database=target_db)
    with psycopg.connect(find_primary_dsn(topo), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {}").format(psycopg.sql.Identifier(target_db)))
    return {"backup": info.key, "restored_from": f"s3://{replicate.DR_BUCKET}/{info.key}", "restored_into": target_db,
            "ok": restored.ok, "seconds": round(elapsed, 3)}


def check_fault_isolation(failing_service: str, window_s: float = 3.0, configuration: dict | None = None,
                          secrets: dict | None = None) -> dict[str, Any]:
    """Fault isolation: while one dependency is cut, only `failing_service` may fail; every other probed
    service keeps answering through the global endpoint. Judged from the probes of the last `window_s`."""
    s = drill_session.current()
    time.sleep(window_s)
    now = time.time()
    recent = [e for e in s.timeline.of_kind("probe") if now - window_s <= e.t <= now]
    by_service: dict[str, list[bool]] = {}
    for e in recent:
        by_service.setdefault(e.data.get("service"), []).append(bool(e.data.get("ok")))
    leaked = sorted(svc for svc, oks in by_service.items() if svc != failing_service and not all(oks))
    contained = failing_service in by_service and not all(by_service[failing_service])
    ok = not leaked and bool(by_service)
    s.event("check", f"fault isolation: only {failing_service} affected", status="pass" if ok else "fail",
            leaked=leaked, failing_service_failed=contained,
            probes={svc: f"{sum(oks)}/{len(oks)} ok" for svc, oks in by_service.items()})
    if not ok:
        s.harness_error = s.harness_error or f"fault leaked beyond {failing_service}: {', '.join(leaked)}"
    return {"leaked": leaked, "failing_service_failed": contained}


def check_breach_contained(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Security breach, after the key rotation: the victim's token from before it is refused by every replica and
    its session is gone; the attacker's token and a new one forged with the leaked key for a live session are
    refused; a fresh login works on every replica; the audit log records the rotation and the revocations; every
    session the probes opened under the leaked key was removed. One check event each (a failure fails the run)."""
    s = drill_session.current()
    leak = auth_actions.leaked(configuration)
    if leak is None and guard.is_dry_run(configuration):
        s.event("note", "security breach checks planned, not run (dry run: no key leaked)", dry_run=True)
        return {"dry_run": True}
    if leak is None:
        raise HarnessError("check_breach_contained: no signing key leaked in this drill (run leak_signing_key first)")
    rotations = [e for e in s.timeline.of_kind("check") if e.event == auth_actions.ROTATED_EVENT
                 and leak.kid in (e.data.get("revoked") or ())]
    if not rotations:
        raise HarnessError(f"check_breach_contained: the leaked key {leak.kid} was never revoked by a rotation")
    rot = rotations[-1].data
    t = _lab.resolve(configuration)
    topo = t.lab.topology()
    results: dict[str, bool] = {}

    def check(name: str, ok: bool, **data: Any) -> None:
        results[name] = ok
        s.event("check", f"security breach: {name}", status="pass" if ok else "fail", **data)

    old = auth_probes.token_accepted(leak.victim["token"], configuration=configuration)
    rd = redis.Redis.from_url(find_primary_redis(topo), socket_timeout=5, decode_responses=True)
    try:
        check("token from before the rotation refused", old["refused"], replicas=old["replicas"])
        gone = not rd.exists(f"session:{leak.victim['session_id']}")
        check("its session revoked", gone, session_present=not gone)
        attacker = auth_probes.token_accepted(leak.attacker_token, configuration=configuration)
        check("attacker token refused", attacker["refused"], replicas=attacker["replicas"])
        with t.http() as http:
            cred = kseed.lab_credentials()[0]
            fresh = auth_ops.login(http, t.router_url, cred.email, cred.password)
        s.secrets.add(fresh["token"])
        # a replica of the DR region reads sessions from its Redis replica: the new session may take a moment
        deadline = time.monotonic() + 5.0
        while not (now_ok := auth_probes.token_accepted(fresh["token"], configuration=configuration))["accepted"] \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        check("fresh login after the rotation works", now_ok["accepted"] and fresh.get("kid") == rot["kid"],
              kid=fresh.get("kid"), replicas=now_ok["replicas"])
        forged = leak.forge(fresh["session_id"])
        s.secrets.add(forged)
        refused = auth_probes.token_accepted(forged, configuration=configuration)
        check("token forged with the leaked key refused", refused["refused"], replicas=refused["replicas"])
        # every session the probes opened under the leaked key, as the workload recorded it
        probe_sessions = sorted({op.key for op in s.timeline.ops if op.f == "session" and op.type == "ok"
                                 and isinstance(op.value, dict) and op.value.get("kid") == leak.kid})
        pipe = rd.pipeline(transaction=False)
        for sid in probe_sessions:
            pipe.exists(f"session:{sid}")
        left = sum(pipe.execute()) if probe_sessions else 0
        check("sessions issued under the leaked key removed", left == 0, probe_sessions=len(probe_sessions),
              still_present=left, revoked_by_rotation=(rot.get("sessions") or {}).get("revoked"))
    finally:
        rd.close()
    audit = auth_probes.audit_entries_since(rot["rotated_at"] - 60, configuration=configuration)
    mine = [a for a in audit if a["seq"] in set(rot.get("audit_seqs") or ())]
    actions_seen = {(a["action"], a["entity_id"].split(" ")[0] if a["action"] == "revoke_sessions" else a["entity_id"])
                    for a in mine}
    revoked_n = str((rot.get("sessions") or {}).get("revoked"))
    expected = {("rotate", rot["kid"]), ("revoke", leak.kid), ("revoke_sessions", revoked_n)}
    check("audit entries record the rotation and the revocation", expected <= actions_seen,
          entries=[{k: a[k] for k in ("seq", "actor", "action", "entity", "entity_id")} for a in mine])
    failed = [name for name, ok in results.items() if not ok]
    if failed:
        s.harness_error = s.harness_error or f"security breach not contained: {', '.join(failed)}"
    return {"passed": sorted(n for n, ok in results.items() if ok), "failed": failed}
