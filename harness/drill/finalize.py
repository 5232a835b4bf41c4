"""Turn a finished drill session into its report: every figure is computed here from the recorded timeline."""

from __future__ import annotations

import platform
import time
from typing import Any

from harness.core import checklist as checklist_core
from harness.core import measure
from harness.core.durations import format_duration
from harness.core.report import build_report
from harness.drill.session import DrillSession

#: data-bearing services measured by the write ledger; api-gateway holds no data of its own
LEDGER_SERVICES = ("authentication", "voucher-service", "tax-invoice-service")
CONSECUTIVE_OK = 3


def _series(events, fault_t: float | None) -> dict[str, Any]:
    probes, writes, marks = [], [], []
    for e in events:
        if e.kind == "probe":
            probes.append({"t": e.t, "service": e.data.get("service"), "ok": bool(e.data.get("ok")),
                           "latency_s": e.data.get("latency_s")})
        elif e.kind == "op":
            if e.event != "invoke":
                writes.append({"t": e.t, "type": e.event})
        elif e.kind in ("fault", "failover"):
            marks.append({"t": e.t, "kind": e.kind, "event": e.event})
    return {"probes": probes, "writes": writes, "fault_t": fault_t, "events": marks}


def build(s: DrillSession, plan, *, journal: dict | None = None, error: BaseException | None = None,
          refused: bool = False) -> dict[str, Any]:
    """Compute the report of `s` (no I/O besides what the caller does with it)."""
    ended_at = s.ended_at or time.time()
    events = s.timeline.events
    fault_t = s.fault_t
    ops = s.timeline.ops
    consecutive = int(s.config.get("consecutive_ok", CONSECUTIVE_OK))
    probed = sorted({e.data.get("service") for e in events if e.kind == "probe"})
    rtos, objectives, rpo, writes = [], [], None, None
    if s.final_keys is not None:
        writes = measure.write_counts(ops, s.final_keys)
    if fault_t is not None:
        rtos = [measure.rto(events, fault_t, svc.name, consecutive=consecutive)
                for svc in plan.services if svc.name in probed]
        if s.final_keys is not None:
            rpo = measure.rpo(ops, s.final_keys, fault_t)
        rpo_map = {name: rpo for name in LEDGER_SERVICES} if rpo is not None else None
        objectives = measure.objective_results(plan, rtos, rpo_map, tier=s.config.get("tier"))
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
        if rpo_item is not None and rpo is not None and "rpo_measured" not in obs:
            o = checklist_core.within(rpo.rpo_s, rpo_item.threshold_s, "RPO")
            obs["rpo_measured"] = {"ok": o.ok and not rpo.lower_bound,
                                   "observed": f"{o.observed}; {rpo.lost} acknowledged write(s) lost"}
    if s.integrity and "data_integrity" not in obs:
        failed = [i["check"] for i in s.integrity if i["status"] == "fail"]
        obs["data_integrity"] = {"ok": not failed,
                                 "observed": (f"failed: {', '.join(failed)}" if failed else
                                              f"{len(s.integrity)} checks, none failed")}
    checklist = checklist_core.evaluate(plan.checklist, obs)
    phases = {r.service: {p.name: p.offset_s for p in r.phases} for r in rtos}
    summary = _summary(objectives, writes, s.integrity, fault_t)
    extra = {
        "series": _series(events, fault_t),
        "phases": phases,
        "environment": {"python": platform.python_version(), "host": platform.node(),
                        "topology": {k: v for k, v in (s.topology or {}).items() if k in ("router", "s3", "toxiproxy")}},
        "notes": list(s.notes),
        "summary": summary,
        "final_read_region": s.final_read_region,
    }
    if s.approvals:
        extra["approvals"] = sorted(s.approvals)
    report = build_report(
        run_id=s.run_id, kind=s.kind, target=s.target, started_at=s.started_at, ended_at=ended_at,
        objectives=objectives, writes=writes, integrity=s.integrity, checklist=checklist, events=events,
        rpo=rpo, rtos=rtos, aborted=s.aborted, harness_error=error or (s.harness_error is not None),
        refused=refused, secrets=s.secrets, extra=extra)
    if s.harness_error and "error" not in report:
        report["error"] = s.harness_error
    return report


def _summary(objectives, writes, integrity, fault_t) -> str:
    if fault_t is None:
        return "no fault was injected in this run"
    parts = []
    missed = [o for o in objectives if not o.met]
    parts.append(f"{len(objectives) - len(missed)}/{len(objectives)} services met their objectives")
    worst = max((o.rto_measured_s for o in objectives if o.rto_measured_s is not None), default=None)
    if worst is not None:
        parts.append(f"slowest recovery {format_duration(worst)}")
    if writes is not None:
        parts.append(f"{writes.acknowledged} acknowledged writes, {writes.lost} lost")
    bad = [i["check"] for i in integrity if i.get("status") == "fail"]
    parts.append(f"integrity: {'failed ' + ', '.join(bad) if bad else 'all checks passed'}" if integrity
                 else "integrity: not checked")
    return "; ".join(parts)


def write(s: DrillSession, plan, *, journal: dict | None = None, error: BaseException | None = None,
          refused: bool = False) -> dict[str, Any]:
    """Build the report and write every report file into the session's report dir."""
    from harness.report import write_report

    s.ended_at = s.ended_at or time.time()
    report = build(s, plan, journal=journal, error=error, refused=refused)
    paths = write_report(report, s.report_dir, journal=journal, secrets=sorted(s.secrets))
    report["_paths"] = {k: str(v) for k, v in paths.items()}
    s.report = report
    return report
