"""Turn a finished drill session into its report: every figure is computed here from the recorded timeline."""

from __future__ import annotations

import platform
import time
from typing import Any

from harness.core import catalog as catalog_core
from harness.core import checklist as checklist_core
from harness.core import detector as detector_core
from harness.core import escalation as escalation_core
from harness.core import measure
from harness.core import outages as outages_core
from harness.core.functions import business_functions
from harness.core.durations import format_duration
from harness.core.report import build_report, redact
from harness.core.timeline import iso
from harness.drill import detector as drill_detector
from harness.failover import policy as failover_policy
from harness.drill import records
from harness.drill.session import DrillSession
from harness.errors import ConfigError
from harness.errors import ExitCode
from harness.report import write_report
from harness.report import notify
from harness.report.i18n import lang_from

#: What each data-bearing service's RPO is measured on: service -> (op f, rpo_basis).
#: voucher-service: the ledger writers' vouchers; tax-invoice-service: the invoices its probe had
#: acknowledged; authentication: the Redis sessions its probe's logins created.
RPO_SOURCES: dict[str, tuple[str, str]] = {
    "voucher-service": ("write", "vouchers"),
    "tax-invoice-service": ("invoice", "tax_invoices"),
    "authentication": ("session", "sessions"),
}
#: Services that keep no data of their own: no RPO to measure (rpo_basis "stateless").
STATELESS_SERVICES = ("api-gateway",)
#: Services whose RPO the voucher ledger (op f "write") measures.
LEDGER_SERVICES = tuple(svc for svc, (f, _) in RPO_SOURCES.items() if f == "write")
CONSECUTIVE_OK = 3


def _series(events, fault_t: float | None) -> dict[str, Any]:
    probes, writes, marks = [], [], []
    for e in events:
        if e.kind == "probe":
            probes.append({"t": e.t, "service": e.data.get("service"), "ok": bool(e.data.get("ok")),
                           "latency_s": e.data.get("latency_s")})
        elif e.kind == "op":
            if e.event != "invoke" and e.data.get("f", "write") == "write":  # the voucher ledger only
                writes.append({"t": e.t, "type": e.event})
        elif e.kind in ("fault", "failover"):
            marks.append({"t": e.t, "kind": e.kind, "event": e.event})
    return {"probes": probes, "writes": writes, "fault_t": fault_t, "events": marks}


def _final_read_t(events) -> float | None:
    reads = [e.t for e in events if e.kind == "check" and e.event == "final read"]
    return reads[-1] if reads else None


def _revoked_kids(events) -> set[str]:
    """Signing keys a rotation of this run revoked (check events "signing key rotated")."""
    return {kid for e in events if e.kind == "check" and e.event == "signing key rotated"
            for kid in e.data.get("revoked") or ()}


def judged_ops(ops, f: str, what: str, events) -> tuple[list, str | None]:
    """The ops an RPO of data set `f` is judged on, and a note of what was left out: records whose TTL ran out
    before the final read, and records issued under a signing key the drill revoked (the rotation removed them
    on purpose). The report and the component checks judge the same records."""
    notes = []
    read_t = _final_read_t(events)
    f_ops = list(ops)
    if read_t is not None:
        f_ops, expired = measure.unexpired(f_ops, read_t, f)
        if expired:
            notes.append(f"{len(expired)} {what} expired before the final read and were not judged")
    f_ops, revoked = measure.unrevoked(f_ops, _revoked_kids(events), f)
    if revoked:
        notes.append(f"{len(revoked)} {what} issued under a signing key the drill revoked were removed by the "
                     "rotation and not judged")
    return f_ops, "; ".join(notes) or None


def _rpo_by_service(s: DrillSession, ops, fault_t: float, events) -> tuple[dict, dict, dict, dict]:
    """(service -> RpoResult, service -> rpo_basis, service -> note, f -> WriteCounts) of the data services."""
    by_f = dict(s.final_keys_by_f or {})
    if s.final_keys is not None:
        by_f.setdefault("write", s.final_keys)
    rpos, basis, notes, counts = {}, {}, {}, {}
    for svc in STATELESS_SERVICES:
        basis[svc] = "stateless"
    for svc, (f, what) in RPO_SOURCES.items():
        if f not in by_f:
            basis[svc] = "not_measured"
            notes[svc] = f"RPO not measured: no final read of {what} in this run"
            continue
        f_ops, note = judged_ops(ops, f, what, events)
        if note:
            notes[svc] = note
        rpos[svc] = measure.rpo(f_ops, by_f[f], fault_t, f=f)
        basis[svc] = what
        if f != "write":
            counts[f] = measure.write_counts(f_ops, by_f[f], f=f)
    return rpos, basis, notes, counts


def build(s: DrillSession, plan, *, journal: dict | None = None, error: BaseException | None = None,
          refused: bool = False) -> dict[str, Any]:
    """Compute the report of `s` (no I/O besides what the caller does with it).

    Every catalog service appears in `objectives`; RTO per probed service (core.measure.rto); RPO per
    data service from its own data set (RPO_SOURCES), api-gateway is stateless.
    """
    ended_at = s.ended_at or time.time()
    events = s.timeline.events
    fault_t = s.fault_t
    ops = s.timeline.ops
    consecutive = int(s.config.get("consecutive_ok", CONSECUTIVE_OK))
    probed = sorted({e.data.get("service") for e in events if e.kind == "probe"})
    dry_run = fault_t is None and any(e.kind == "fault" and e.data.get("dry_run") for e in events)
    rtos, rpo, writes = [], None, None
    rpos: dict[str, measure.RpoResult] = {}
    basis = {svc: "stateless" for svc in STATELESS_SERVICES}
    rpo_notes: dict[str, str] = {}
    other_writes: dict[str, measure.WriteCounts] = {}
    if s.final_keys is not None:
        writes = measure.write_counts(ops, s.final_keys)
    if fault_t is not None:
        rtos = [measure.rto(events, fault_t, svc.name, consecutive=consecutive)
                for svc in plan.services if svc.name in probed]
        rpos, basis, rpo_notes, other_writes = _rpo_by_service(s, ops, fault_t, events)
        rpo = rpos.get(LEDGER_SERVICES[0]) if LEDGER_SERVICES else None
    why_not = ("dry run: the fault was planned, not injected" if dry_run else
               "no fault was injected" if fault_t is None else "")
    if why_not:
        rpo_notes = {svc: why_not for svc in (x.name for x in plan.services)}
    # a drill that injects nothing by design (tabletop) has no objectives to judge
    judged = s.config.get("drill_expects_fault", True) is not False
    tier = s.config.get("drill_tier") or None
    objectives = measure.objective_results(plan, rtos, rpos, tier=tier,
                                           catalog=[svc.name for svc in plan.services] if judged else None,
                                           rpo_basis=basis, notes=rpo_notes)
    # post_test checklist evidence that comes from the measurements
    obs = dict(s.observations)
    if fault_t is not None:
        rto_item = next((c for c in plan.checklist if c.id == "rto_measured"), None)
        worst_rto = checklist_core.worst([r.rto_s if r.rto_s is not None else float("inf") for r in rtos]) \
            if rtos else None
        if rto_item is not None and "rto_measured" not in obs:
            if worst_rto is None:
                obs["rto_measured"] = {"ok": False, "observed": "no service was probed after the fault"}
            elif worst_rto == float("inf"):
                never = [r.service for r in rtos if r.rto_s is None]
                obs["rto_measured"] = {"ok": False, "observed": f"never recovered: {', '.join(never)}"}
            else:
                o = checklist_core.within(worst_rto, rto_item.threshold_s, "worst service RTO")
                obs["rto_measured"] = {"ok": o.ok, "observed": o.observed}
        rpo_item = next((c for c in plan.checklist if c.id == "rpo_measured"), None)
        if rpo_item is not None and rpos and "rpo_measured" not in obs:
            worst_svc = max(rpos, key=lambda k: (rpos[k].lower_bound, rpos[k].rpo_s))
            worst = rpos[worst_svc]
            o = checklist_core.within(worst.rpo_s, rpo_item.threshold_s, f"worst RPO ({worst_svc})")
            lost = ", ".join(f"{rpos[k].lost} {basis[k]}" for k in rpos)
            obs["rpo_measured"] = {"ok": o.ok and not any(r.lower_bound for r in rpos.values()),
                                   "observed": f"{o.observed}; acknowledged and lost: {lost}"}
    if s.integrity and "data_integrity" not in obs:
        failed = [i["check"] for i in s.integrity if i["status"] == "fail"]
        obs["data_integrity"] = {"ok": not failed,
                                 "observed": (f"failed: {', '.join(failed)}" if failed else
                                              f"{len(s.integrity)} checks, none failed")}
    checklist = checklist_core.evaluate(plan.checklist, obs)
    phases = {r.service: {p.name: p.offset_s for p in r.phases} for r in rtos}
    summary = _summary(objectives, writes, s.integrity, fault_t, rpos, basis, dry_run)
    extra = {
        "series": _series(events, fault_t),
        "phases": phases,
        "rpo_by_service": {svc: {"rpo_basis": basis.get(svc), **(rpos[svc].to_dict() if svc in rpos else {})}
                           for svc in (x.name for x in plan.services)},
        "environment": {**(s.environment.to_report() if s.environment is not None else {"name": "lab", "kind": "lab"}),
                        "python": platform.python_version(), "host": platform.node(),
                        "topology": {k: v for k, v in (s.topology or {}).items()
                                     if k in ("router", "s3", "toxiproxy", "status_page")}},
        "notes": list(s.notes),
        "summary": summary,
        "final_read_region": s.final_read_region,
    }
    if other_writes:
        extra["writes_by_kind"] = {f: wc.to_dict() for f, wc in other_writes.items()}
    if s.approvals:
        extra["approvals"] = sorted(s.approvals)
    if s.approvers:
        extra["approvers"] = [{k: v for k, v in a.items() if k != "t"} for a in s.approvers]
    extra["escalation"] = _escalation(s, plan, rtos)
    if s.recorder is not None:
        extra["dry_run_calls"] = s.recorder.calls
    if tier:
        t = plan.tier(tier)
        extra["tier"] = {"name": t.name, "rto_s": t.rto_s, "rpo_s": t.rpo_s, "availability": t.availability,
                         "dr_mode": t.dr_mode}
    extra["business_functions"] = business_functions(plan, [o.to_dict() for o in objectives], tier)
    extra["decisions"] = [{"t": iso(e.t), "ts": e.t, **e.data} for e in s.timeline.of_kind("decision")]
    extra["detector"] = _detector(s, plan, fault_t)
    extra["notes"] = list(s.notes)
    extra["series"]["detector"] = [{"t": x["t"], "level": x["level"]} for x in extra["detector"]["samples"]]
    if extra["detector"].get("expected_level") is not None:
        extra["series"]["expected_level"] = extra["detector"]["expected_level"]
    if s.config.get("drill_scenario"):
        extra["scenario"] = dict(s.config["drill_scenario"])
    level = _level_objective(s, plan, rtos) if judged else None
    report = build_report(
        run_id=s.run_id, kind=s.kind, target=s.target, started_at=s.started_at, ended_at=ended_at,
        objectives=objectives, writes=writes, integrity=s.integrity, checklist=checklist, events=events,
        rpo=rpo, rtos=rtos, aborted=s.aborted, harness_error=error or (s.harness_error is not None),
        refused=refused, dry_run=dry_run, secrets=s.secrets, extra=extra, level_objective=level)
    if s.harness_error and "error" not in report:
        report["error"] = s.harness_error
    if s.refused and "error" not in report:  # why safety refused (e.g. "not injecting: pre_test replica_lag: ...")
        report["error"] = s.refused
    _run_rules(s, report)
    return report


def _level_objective(s: DrillSession, plan, rtos) -> catalog_core.LevelObjective | None:
    """report.json `level_objective`: the scenario's disaster level (configuration `drill_level`) as an objective,
    its expected downtime on the drill clock (`drill_time_scale`) against the catalog services' longest outage after
    the fault (harness.core.outages: a failed probe to the next streak of successes; None when one never ended),
    judged by harness.core.catalog.level_objective; None when the run names no level.

    The downtime is the longest single outage, not the RTO: a scenario with several short faults in a row (network
    instability) has an RTO from its first failed probe to its last recovery, but its services were down only in
    the short outages."""
    level = s.config.get("drill_level")
    if level is None:
        return None
    try:
        lvl, scale, _ = escalation_core.level_downtime(plan, level, s.config.get("drill_time_scale"))
    except ConfigError as e:
        s.note(f"level objective not judged: {e}")
        return None
    catalog = {svc.name for svc in plan.services}
    probes = s.timeline.of_kind("probe")
    since = s.fault_t if s.fault_t is not None else 0.0
    downtime: dict[str, tuple[float | None, int]] = {}
    for r in rtos:
        if r.service not in catalog:
            continue
        downtime[r.service] = (outages_core.longest_outage_s(outages_core.outages(probes, r.service, since)), r.probes)
    return catalog_core.level_objective(lvl.level, lvl.name, lvl.expected_downtime_s, scale, downtime)


def _escalation(s: DrillSession, plan, rtos) -> dict[str, Any]:
    """report.json `escalation`: the time scale, the matrix's calls on the drill clock (from the timeline), the decision
    time of every gate the run passed (the approving level's response time) and the RTO with and without it."""
    try:
        scale = escalation_core.time_scale(s.config.get("drill_time_scale"))
    except ConfigError as e:
        s.note(f"escalation not judged: {e}")
        scale = escalation_core.DEFAULT_TIME_SCALE
    steps = [{"t": e.t, **e.data} for e in s.timeline.of_kind("escalation")]
    gates = list(dict.fromkeys(str(e.data.get("gate")) for e in s.timeline.of_kind("failover")
                               if e.event == "approved" and e.data.get("gate")))
    decisions = []
    for gate in gates:
        try:
            d = escalation_core.decision(plan, gate, scale)
        except ConfigError as e:
            s.note(str(e))
            continue
        d["approved_by"] = next((a["who"] for a in s.approvers if a["gate"] == gate), None)
        decisions.append(d)
    return {"time_scale": scale, "steps": steps, "decisions": decisions,
            "decision_time_s": sum(d["plan_s"] for d in decisions),
            "decision_time_drill_s": round(sum(d["drill_s"] for d in decisions), 3),
            "rto": escalation_core.rto_with_decisions([(r.service, r.rto_s) for r in rtos], decisions, scale)}


def _detector(s: DrillSession, plan, fault_t: float | None) -> dict[str, Any]:
    """report.json `detector`: the levels the run's sampler recorded against the scenario's expected level
    (configuration `drill_expected_level`). A mismatch is noted, it does not fail the run: the level is the
    plan's detector judging the lab, information for the people who own the weights, not an objective."""
    try:
        expected, why = detector_core.expected_level(plan, s.config.get("drill_expected_level"))
    except ConfigError as e:
        expected, why = None, ""
        s.note(f"expected disaster level not judged: {e}")
    doc = detector_core.summarize(plan, drill_detector.samples_of(s), expected, why, fault_t)
    if doc["match"] is False and doc.get("note") and not any(n.startswith("detector reached level") for n in s.notes):
        s.notes.append(doc["note"])
    return doc


def _summary(objectives, writes, integrity, fault_t, rpos=None, basis=None, dry_run=False) -> str:
    if fault_t is None:
        return "dry run: the fault was planned, not injected" if dry_run else "no fault was injected in this run"
    parts = []
    missed = [o for o in objectives if not o.met]
    parts.append(f"{len(objectives) - len(missed)}/{len(objectives)} services met their objectives")
    unmeasured = [o.service for o in objectives if not o.measured]
    if unmeasured:
        parts.append(f"not measured: {', '.join(unmeasured)}")
    worst = max((o.rto_measured_s for o in objectives if o.rto_measured_s is not None), default=None)
    if worst is not None:
        parts.append(f"slowest recovery {format_duration(worst)}")
    if writes is not None:
        parts.append(f"{writes.acknowledged} acknowledged writes, {writes.lost} lost")
    else:
        parts.append("writes not measured (no final read)")
    for svc, r in (rpos or {}).items():
        if svc not in LEDGER_SERVICES and r.lost:
            parts.append(f"{r.lost} acknowledged {(basis or {}).get(svc, svc)} lost")
    bad = [i["check"] for i in integrity if i.get("status") == "fail"]
    parts.append(f"integrity: {'failed ' + ', '.join(bad) if bad else 'all checks passed'}" if integrity
                 else "integrity: not checked")
    return "; ".join(parts)


def write(s: DrillSession, plan, *, journal: dict | None = None, error: BaseException | None = None,
          refused: bool = False) -> dict[str, Any]:
    """Build the report and write every report file into the session's report dir."""
    drill_detector.stop(s)  # a run that never reached stop_workload
    failover_policy.stop_policy(configuration={"drill_run_id": s.run_id})  # idempotent
    s.event("note", "writing the report")  # marks the phase (an interruption test waits for it)
    s.ended_at = s.ended_at or time.time()
    lang = lang_from(s.config)
    report = build(s, plan, journal=journal, error=error, refused=refused)
    notifications = _notify(s, plan, redact(report, s.secrets), lang)
    if notifications is not None:
        report["notifications"] = notifications
    paths = write_report(report, s.report_dir, journal=journal, secrets=sorted(s.secrets), lang=lang)
    if _interrupted_while_writing(s, report):  # the files say what happened: interrupted (exit 130)
        report = build(s, plan, journal=journal, error=error, refused=refused)
        if notifications is not None:  # already sent: not again
            report["notifications"] = notifications
        paths = write_report(report, s.report_dir, journal=journal, secrets=sorted(s.secrets), lang=lang)
    report["_paths"] = {k: str(v) for k, v in paths.items()}
    report["_lang"] = lang
    records.record_run(report, s.report_dir, journal)  # allure-results/ and the run history
    s.report = report
    return report


def _notify(s: DrillSession, plan, report: dict[str, Any], lang: str) -> list[dict[str, Any]] | None:
    """The plan's notifications of this drill (outbox, SMTP, webhook as configured); a failure to notify is a
    note, never a different verdict."""
    try:
        cfg = notify.NotifyConfig.from_sources(s.config)
        return notify.dispatch(report, plan, s.report_dir, cfg, lang)
    except Exception as e:  # communication must not cost the report
        s.note(f"notifications not sent: {type(e).__name__}: {e}")
        return None


def _interrupted_while_writing(s: DrillSession, report: dict[str, Any]) -> bool:
    """A signal came while the report was built or written (the shield only recorded it): note it, and the
    report is to be written again as interrupted."""
    from harness.drill import session as drill_session

    if report.get("status") == "aborted":
        return False
    late = drill_session.SIGNALS.unrecorded()
    if not late:
        return False
    s.aborted = True
    for name in late:
        s.note(f"{name} received while the report was written: recorded, the report rewritten as interrupted")
    return True


def _run_rules(s: DrillSession, report: dict[str, Any]) -> None:
    """Rules over the whole run (not measurements), applied to the built report:
    a run that injected no fault, not being a dry run (nor a drill that injects none: drill_expects_fault
    false), measured nothing: harness error (exit 1); a failed Gherkin step fails a run that would pass
    (exit 1, the steps named in `error`); a dry run says so (`dry_run: true`)."""
    dry_run = s.dry_run or (s.fault_t is None and any(e.data.get("dry_run") for e in s.timeline.of_kind("fault")))
    if dry_run:
        report.setdefault("dry_run", True)
    why = None
    if (report.get("exit_code") in (ExitCode.PASSED, ExitCode.OBJECTIVES_MISSED) and s.fault_t is None
            and not dry_run and s.config.get("drill_expects_fault", True) is not False):
        why = "the run injected no fault: nothing was measured"
    elif report.get("exit_code") == ExitCode.PASSED and s.failed_steps:
        why = f"scenario step(s) failed: {'; '.join(s.failed_steps)}"
    if why is not None:
        why = redact(why, s.secrets)
        report.update(status="failed", exit_code=ExitCode.HARNESS_ERROR,
                      error=(report["error"] + "; " if report.get("error") else "") + why)
