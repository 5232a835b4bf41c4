"""Drill activities of the data disasters (Chaos Toolkit actions, also called by the Gherkin steps): a fresh base
backup, detection by the integrity checks, repairs and restores through the backups, the DR-copy restore.

Every recovery goes into a NEW PostgreSQL server (harness.backup.pitr: a base backup + the archived WAL); the
live database only ever receives the rows it lost, re-copied by primary key (harness.backup.repair); the
recovered server is discarded afterwards. Figures (detection time, repair time, rows repaired, RPO) are
measured and recorded as timeline events of the run; the rollbacks of the data faults are the repairs here.

Why a fresh base backup first: the lab's base backup of `lab up` is on the timeline the lab started with, and
a shared lab that was failed over and back is on a later one; recovery across a timeline switch is not
supported yet. A base backup of the current primary, taken as the plan's hourly snapshot layer would, makes
every point after it recoverable on the current timeline.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import psycopg

from harness.backup import pitr, repair, replicate
from harness.checks import integrity
from harness.core import measure
from harness.drill import session as drill_session
from harness.errors import HarnessError
from harness.lab import aws, walarchive
from harness.safety import guard
from harness.targets import _lab
from harness.targets.postgres import data_faults
from harness.workload import WorkloadError, find_primary_dsn, final_read

__all__ = ["attack_tenant", "detect_integrity_violation", "fingerprint_tenant", "inject_corruption", "live_primary_dsn",
           "recover_tenant", "repair_corruption", "restore_from_dr_copies", "take_base_backup"]

#: the checks a recovered copy is verified with (it has no pre-fault snapshot of its own; amcheck is slow)
COPY_CHECKS = tuple(n for n in integrity.CHECK_NAMES if n not in ("snapshot_unchanged", "pg_amcheck"))


def _session():
    return drill_session.current(required=False)


def _event(kind: str, event: str, **data: Any) -> None:
    s = _session()
    if s is not None:
        s.event(kind, event, **data)


#: how long the live primary may take to answer (a loaded machine answers a connection in seconds)
LIVE_WAIT_S = 30.0


def live_primary_dsn(configuration: dict | None) -> str:
    """The live primary's DSN; a primary that does not answer within a connection timeout is asked again
    (up to LIVE_WAIT_S) before this gives up."""
    topo = _lab.resolve(configuration).lab.topology()
    deadline = time.monotonic() + LIVE_WAIT_S
    while True:
        try:
            return find_primary_dsn(topo, connect_timeout_s=10)
        except WorkloadError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def _pitr_configuration(configuration: dict | None) -> dict[str, Any]:
    """The configuration a repair's recovery runs with. A rollback (from the ledger) gets only the lab's state
    dir and run id: its fault was injected only with database_point_in_time_recovery approved (the injection
    required the gate), so that approval carries over to the fault's own repair."""
    cfg = dict(configuration or {})
    given = cfg.get("drill_approvals") or []
    given = given.split(",") if isinstance(given, str) else list(given)
    cfg["drill_approvals"] = sorted({*(g.strip() for g in given if g.strip()), pitr.PITR_GATE})
    return cfg


def _server_name(prefix: str) -> str:
    return pitr.check_server_name(f"{prefix}-{uuid.uuid4().hex[:8]}")


# -- backups ----------------------------------------------------------------------------------------
def take_base_backup(copy_to_dr: bool = False, configuration: dict | None = None,
                     secrets: dict | None = None) -> dict[str, Any]:
    """A base backup of the live primary into s3://kerp-backups (the plan's hourly snapshot layer), and with
    `copy_to_dr` its copy in the DR-region bucket, read back and checked by sha256."""
    t = _lab.resolve(configuration)
    name = data_faults.live_primary_node(t)
    region = _lab.region_of_node(name)
    node = t.nodes[name]
    if node.archive_spool is None:
        raise HarnessError(f"PostgreSQL {name} is the primary but does not archive WAL: a base backup of it "
                           "could not be rolled forward (fail back to the primary region first)")
    endpoint = t.s3_endpoint_url
    t0 = time.monotonic()
    base = walarchive.base_backup(node, endpoint)
    out: dict[str, Any] = {"region": region, **base.to_dict(), "seconds": round(time.monotonic() - t0, 3)}
    if copy_to_dr:
        out["dr_copy"] = replicate.copy_to_dr(endpoint, base.key, base.sha256)
    _event("note", "base backup taken" + (" and copied to the DR region" if copy_to_dr else ""), **out)
    return out


# -- detection --------------------------------------------------------------------------------------
def _fault_event(fault: str) -> Any:
    s = _session()
    if s is None:
        return None
    return next((e for e in reversed(s.timeline.of_kind("fault"))
                 if e.event == fault and e.data.get("phase") == "inject"), None)


def detect_integrity_violation(check: str = "vouchers_balanced", fault: str = "corrupt_voucher_lines",
                               timeout_s: float = 30.0, interval_s: float = 1.0, configuration: dict | None = None,
                               secrets: dict | None = None) -> dict[str, Any]:
    """Run integrity check `check` on the live primary every `interval_s` (the scheduled integrity job) until it
    fails; the detection time is measured from the injection of `fault`. The check passes as drill evidence
    when it failed and named every voucher the fault touched."""
    dsn = live_primary_dsn(configuration)
    inj = _fault_event(fault)
    if inj is None:  # no injection on this run's timeline: the detection time cannot be measured
        _event("note", f"detect_integrity_violation: no {fault} injection on the timeline; detection time not measured")
    touched = {str(v) for v in ((inj.data.get("voucher_ids") or []) if inj is not None else [])}
    deadline = time.monotonic() + timeout_s
    runs = 0
    while True:
        with psycopg.connect(dsn, connect_timeout=15) as c:
            (res,) = integrity.run_all(c, only=[check])
        runs += 1
        if res.status == "fail" or time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    detected = res.status == "fail"
    detection_s = round(time.time() - inj.t, 3) if inj is not None else None
    named = set(res.offending)
    out = {"check": check, "detected": detected, "detection_s": detection_s if detected else None,
           "offending": list(res.offending), "count": res.count, "details": res.details, "runs": runs,
           "touched_vouchers": sorted(touched, key=int), "all_named": touched <= named if touched else None}
    ok = detected and (not touched or touched <= named or res.count > len(named))
    _event("check", f"integrity violation detected: {check}" if detected else f"integrity violation NOT detected: {check}",
           status="pass" if ok else "fail", **out)
    return out


# -- corruption: repaired from a point-in-time recovery ----------------------------------------------
def inject_corruption(vouchers: int = 5, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The disaster: `vouchers` vouchers' first lines changed by an UPDATE outside the application."""
    return data_faults.corrupt_voucher_lines(vouchers=vouchers, configuration=configuration)


def _active(fault: str, configuration: dict | None) -> Any:
    entries = guard.ledger(configuration).active()
    s = _session()
    mine = [e for e in entries if e.fault == fault and (s is None or e.run_id in (None, s.run_id))]
    return mine[-1] if mine else None


def _active_or_note(fault: str, repair: str, configuration: dict | None) -> Any:
    """This run's active `fault` (its ledger entry names what to repair), or None with a note: the repair ran
    already (the rollback after the drill's own repair), nothing to do."""
    entry = _active(fault, configuration)
    if entry is None:
        _event("note", f"{repair}: no active {fault} fault, nothing to do")
    return entry


def repair_corruption(line_ids: list[int] | None = None, before: str | None = None,
                      configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """Repair corrupted voucher lines from a point-in-time recovery: a NEW server recovered to `before` (just
    before the corruption), lines `line_ids` re-copied from it into the live database (only those rows:
    everything written after stays), the balanced-voucher check run again, the server discarded.

    Without arguments, the active corrupt_voucher_lines fault of this run names them. Idempotent (the rollback
    of that fault): a line that is already right is not changed. RPO of the repair: `before` minus the last
    transaction the recovered server replayed."""
    entry = None
    if line_ids is None or before is None:
        entry = _active_or_note("corrupt_voucher_lines", "repair_corruption", configuration)
        if entry is None:
            return {"repaired": 0, "how": "no active corrupt_voucher_lines fault"}
        line_ids, before = entry.details["line_ids"], entry.details["before"]
    target = datetime.fromisoformat(before)
    t = _lab.resolve(configuration)
    live = live_primary_dsn(configuration)
    name = _server_name("repair")
    t0 = time.monotonic()
    res = pitr.point_in_time_recovery(t.lab, target, name, primary_dsn=live,
                                      configuration=_pitr_configuration(configuration), checks=COPY_CHECKS)
    try:
        t_recovered = time.monotonic()
        with psycopg.connect(res.dsn, autocommit=True, connect_timeout=15) as src, \
                psycopg.connect(live, autocommit=True, connect_timeout=15) as dst:
            copied = repair.copy_rows(src, dst, "voucher_lines", line_ids)
            (after,) = integrity.run_all(dst, only=["vouchers_balanced"])
    finally:
        pitr.discard(t.lab, name)
    seconds = time.monotonic() - t0
    # the copy holds every commit up to `before` (recovery stops at the first one after it): the repaired rows
    # come from that point, so a legitimate change to them between it and the corruption would be lost
    point = res.recovered_to.timestamp() if res.recovered_to else target.timestamp()
    fault_at = entry.injected_at if entry is not None else target.timestamp()
    reverted = guard.mark_reverted("corrupt_voucher_lines", entry.target if entry else
                                   f"postgres:{data_faults.live_primary_region(t)}:kerp.voucher_lines",
                                   configuration, how="repaired from point-in-time recovery")
    out = {"server": name, "before": target.isoformat(),
           "recovered_to": res.recovered_to.isoformat() if res.recovered_to else None,
           "rpo_s": round(max(0.0, fault_at - point), 3), "target_minus_recovered_s": res.difference_s,
           "base_backup": res.base_backup["key"], "pitr_notes": list(res.notes), "wal_segments": res.wal_segments,
           "recovery_s": round(t_recovered - t0, 3), "repair_s": round(seconds, 3),
           "rows_repaired": copied["changed"], "rows_copied": copied["rows"], "line_ids": copied["ids"],
           "copy_integrity": [c.to_dict() for c in res.integrity], "integrity_after": after.to_dict(),
           "reverted": reverted}
    _event("check", "corruption repaired from point-in-time recovery",
           status="pass" if after.status == "pass" and res.ok else "fail", **out)
    return out


# -- ransomware: a tenant restored from backup + PITR ------------------------------------------------
def _fingerprint_event(company_id: int) -> dict[str, Any] | None:
    s = _session()
    if s is None:
        return None
    e = next((e for e in reversed(s.timeline.of_kind("note")) if e.event == "tenant fingerprint taken"
              and e.data.get("company_id") == company_id), None)
    return e.data if e is not None else None


def fingerprint_tenant(company_id: int, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Row counts and sha256 of company `company_id`'s rows on the live primary (the pre-attack fingerprint
    the restore is verified against)."""
    with psycopg.connect(live_primary_dsn(configuration), autocommit=True, connect_timeout=15) as c:
        upto = repair.max_ids(c)
        fp = repair.tenant_fingerprint(c, int(company_id), upto=upto)
    out = {**fp.to_dict(), "upto": upto}
    _event("note", "tenant fingerprint taken", **out)
    return out


def attack_tenant(company_id: int, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The disaster: ransomware encrypts company `company_id`'s rows and deletes its voucher lines."""
    return data_faults.encrypt_tenant(company_id, configuration=configuration)


def recover_tenant(company_id: int | None = None, before: str | None = None, configuration: dict | None = None,
                   secrets: dict | None = None) -> dict[str, Any]:
    """Restore company `company_id` from backup + PITR: a NEW server recovered to `before` (just before the
    attack), verified there (integrity checks, and the company's rows against the pre-attack fingerprint when
    the run took one), then the company's rows UPSERTed into the live database (the switch: the application
    keeps its database, only the tenant's rows are restored), verified there again, the server discarded.

    Without arguments the active encrypt_tenant fault of this run names them (it is that fault's rollback)."""
    entry = None
    if company_id is None or before is None:
        entry = _active_or_note("encrypt_tenant", "recover_tenant", configuration)
        if entry is None:
            return {"rows_restored": 0, "how": "no active encrypt_tenant fault"}
        company_id, before = entry.details["company_id"], entry.details["before"]
    cid = int(company_id)
    target = datetime.fromisoformat(before)
    t = _lab.resolve(configuration)
    live = live_primary_dsn(configuration)
    name = _server_name("tenant")
    pre = _fingerprint_event(cid)
    t0 = time.monotonic()
    res = pitr.point_in_time_recovery(t.lab, target, name, primary_dsn=live,
                                      configuration=_pitr_configuration(configuration), checks=COPY_CHECKS)
    try:
        t_recovered = time.monotonic()
        with psycopg.connect(res.dsn, autocommit=True, connect_timeout=15) as src:
            copy_checks = list(res.integrity)
            upto = pre["upto"] if pre else repair.max_ids(src)  # rows written after the fingerprint aside
            restored_fp = repair.tenant_fingerprint(src, cid, upto=upto)
            copy_diff = repair.TenantFingerprint(cid, pre["tables"]).differences(restored_fp) if pre else None
            copy_ok = all(c.status != "fail" for c in copy_checks) and not copy_diff
            if not copy_ok:
                raise HarnessError(f"the recovered copy of company {cid} failed verification: "
                                   + "; ".join([c.details for c in copy_checks if c.status == "fail"]
                                               + (copy_diff or [])))
            with psycopg.connect(live, autocommit=True, connect_timeout=15) as dst:
                restored = repair.restore_tenant(src, dst, cid)
                live_fp = repair.tenant_fingerprint(dst, cid, upto=upto)
                live_checks = integrity.run_all(dst, only=COPY_CHECKS)
    finally:
        pitr.discard(t.lab, name)
    seconds = time.monotonic() - t0
    live_diff = restored_fp.differences(live_fp)
    reverted = guard.mark_reverted("encrypt_tenant", entry.target if entry else
                                   f"postgres:{data_faults.live_primary_region(t)}:kerp.company:{cid}",
                                   configuration, how="tenant restored from point-in-time recovery")
    ok = not live_diff and all(c.status != "fail" for c in live_checks)
    out = {"company_id": cid, "server": name, "before": target.isoformat(),
           "recovered_to": res.recovered_to.isoformat() if res.recovered_to else None, "rpo_s": res.difference_s,
           "base_backup": res.base_backup["key"], "pitr_notes": list(res.notes), "recovery_s": round(t_recovered - t0, 3),
           "restore_s": round(seconds, 3), "rows": restored["rows"], "rows_restored": restored["changed"],
           "tables": restored["tables"], "verified_against_pre_attack": pre is not None,
           "copy_checks": [c.to_dict() for c in copy_checks], "live_checks": [c.to_dict() for c in live_checks],
           "live_matches_copy": not live_diff, "differences": live_diff, "fingerprint": live_fp.to_dict(),
           "reverted": reverted}
    _event("check", "tenant restored from backup and point-in-time recovery", status="pass" if ok else "fail", **out)
    return out


# -- natural disaster: the DR-region copies alone -----------------------------------------------------
@drill_session.judged_only_after_a_fault({"dry_run": True})
def restore_from_dr_copies(configuration: dict | None = None, secrets: dict | None = None) -> dict[str, Any]:
    """With the primary region and its bucket lost: recover the database from the DR-region bucket alone (its
    newest base backup copy and the WAL the shipper copied there) into a NEW server, as far as that archive
    goes on the lost region's timeline; run the integrity checks there and measure the RPO of the restore against the workload's
    acknowledged writes up to the region loss (the ledger's writes missing from the restored copy), then discard
    it. What a restore from the archive alone loses is the WAL not archived yet: at most about archive_timeout."""
    s = drill_session.current()
    t = _lab.resolve(configuration)
    endpoint = t.s3_endpoint_url
    primary_bucket = aws.client("s3", endpoint)
    try:
        primary_bucket.list_objects_v2(Bucket=aws.BUCKET, MaxKeys=1)
        primary_reachable = True
    except Exception:
        primary_reachable = False
    region_lost = _fault_event("fail_region")  # the loss of the primary region ends what can be archived
    fault_t = region_lost.t if region_lost is not None else s.fault_t
    name = _server_name("dr-copy")
    t0 = time.monotonic()
    # the lost region's timeline only: what its WAL copies hold (the DR server, promoted meanwhile, archives a
    # later timeline into the same buckets; following it would measure the replication, not the copies)
    res = pitr.point_in_time_recovery(t.lab, None, name, primary_dsn=None, bucket=replicate.DR_BUCKET,
                                      configuration=configuration, checks=COPY_CHECKS, timeline="current")
    try:
        restore_s = time.monotonic() - t0
        checks = list(res.integrity)
        keys = final_read(res.dsn, s.run_id)
    finally:
        pitr.discard(t.lab, name)
    upto = fault_t if fault_t is not None else time.time()
    ops = [o for o in s.timeline.ops if o.t is not None and o.t <= upto]
    rpo = measure.rpo(ops, keys, upto)
    out = {"server": name, "bucket": replicate.DR_BUCKET, "primary_bucket_reachable": primary_reachable,
           "region_lost_at": upto,
           "base_backup": res.base_backup["key"], "pitr_notes": list(res.notes), "wal_segments": res.wal_segments,
           "recovered_to": res.recovered_to.isoformat() if res.recovered_to else None,
           "recovered_to_before_fault_s": (round(upto - res.recovered_to.timestamp(), 3)
                                           if res.recovered_to else None),
           "rpo_s": round(rpo.rpo_s, 3), "lost": rpo.lost, "acknowledged": rpo.acknowledged,
           "present": len(keys), "rpo": rpo.to_dict(), "restore_s": round(restore_s, 3),
           "integrity": [c.to_dict() for c in checks]}
    ok = (not primary_reachable and res.wal_segments > 0 and all(c.status != "fail" for c in checks)
          and len(keys) > 0)
    _event("check", "restored from the DR-region copies", status="pass" if ok else "fail", **out)
    if not ok:
        s.harness_error = s.harness_error or (
            "restore from the DR-region copies failed: " + ("the primary bucket was still reachable; "
                                                            if primary_reachable else "")
            + "; ".join(c.details for c in checks if c.status == "fail"))
    return out
