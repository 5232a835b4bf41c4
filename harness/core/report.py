"""The report model: builds the report.json dict (docs/CONTRACTS.md), decides status and exit code, redacts secrets."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from harness.core.measure import RpoResult, RtoResult, WriteCounts, latency_stats
from harness.core.redact import REDACTED, redact, secret_values
from harness.core.timeline import Event, iso
from harness.errors import ExitCode, HarnessError

__all__ = ["ABORTED", "FAILED", "INTEGRITY_STATUSES", "PASSED", "REDACTED", "WRITE_FIELDS", "WRITES_NOT_MEASURED",
           "build_report", "decide_exit", "redact", "report_timeline", "secret_values", "workload_summary"]

PASSED, FAILED, ABORTED = "passed", "failed", "aborted"
INTEGRITY_STATUSES = ("pass", "fail", "warning")
#: The integer fields of report.json `writes` (docs/CONTRACTS.md), in display order.
WRITE_FIELDS = ("attempted", "acknowledged", "lost", "recovered", "unexpected", "indeterminate")
WRITES_NOT_MEASURED = ("no final read of the written data happened in this run: the counts are not measured "
                       "(lost 0 here means nothing)")


def _plain(x: Any) -> Any:
    """A dataclass with to_dict() -> its dict; mappings -> dict; anything else unchanged."""
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if isinstance(x, Mapping):
        return dict(x)
    return x


def _field(x: Any, name: str, default: Any = None) -> Any:
    if isinstance(x, Mapping):
        return x.get(name, default)
    return getattr(x, name, default)


def decide_exit(objectives: Iterable[Any], integrity: Iterable[Any], aborted: bool = False,
                harness_error: BaseException | bool | None = None, refused: bool = False,
                checklist: Iterable[Any] = (), dry_run: bool = False,
                level_objective: Any = None) -> tuple[str, int]:
    """(status, exit code) of a run, most severe first.

    interrupted (aborted) -> aborted/130 (the only "aborted" status); harness error -> failed/its
    exit code (1 unless the HarnessError says otherwise, e.g. a SafetyRefusal gives 5); refused by
    safety -> failed/5; an integrity check failing -> failed/4 (beats objectives); an objective missed
    or a checklist item failing -> failed/3; else passed/0. Integrity "warning" does not fail the run.
    A dry run measures nothing by design: its objectives (all "not measured") do not fail it. The scenario's
    level objective (its level's downtime on the drill clock, when the run has one) counts as an objective.
    """
    if aborted:
        return ABORTED, ExitCode.INTERRUPTED
    if harness_error:
        code = harness_error.exit_code if isinstance(harness_error, HarnessError) else ExitCode.HARNESS_ERROR
        return FAILED, code
    if refused:
        return FAILED, ExitCode.REFUSED_BY_SAFETY
    if any(_field(i, "status") == "fail" for i in integrity):
        return FAILED, ExitCode.INTEGRITY_VIOLATION
    if not dry_run and any(not _field(o, "met", False) for o in objectives):
        return FAILED, ExitCode.OBJECTIVES_MISSED
    if not dry_run and level_objective is not None and not _field(level_objective, "met", False):
        return FAILED, ExitCode.OBJECTIVES_MISSED
    if any(_field(c, "status") == "fail" for c in checklist):
        return FAILED, ExitCode.OBJECTIVES_MISSED
    return PASSED, ExitCode.PASSED


def workload_summary(events: Iterable[Event]) -> dict[str, Any] | None:
    """Counts of the per-operation events (kept out of the report timeline), or None if there are none."""
    ops = [e for e in events if e.kind == "op"]
    if not ops:
        return None
    by_type: dict[str, int] = {}
    processes: set[str] = set()
    for e in ops:
        by_type[e.event] = by_type.get(e.event, 0) + 1
        processes.add(str(e.data.get("process", "")))
    first, last = min(e.t for e in ops), max(e.t for e in ops)
    return {"ops": len(ops), "by_type": dict(sorted(by_type.items())), "processes": sorted(processes),
            "first_t": iso(first), "last_t": iso(last), "_first": first, "_last": last}


def report_timeline(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Timeline entries for the report: every event but the per-operation "op" ones, plus one
    "note" event "workload_summary" (at the last operation's time) summarising those."""
    evs = list(events)
    out = [e for e in evs if e.kind != "op"]
    summary = workload_summary(evs)
    if summary is not None:
        t = summary.pop("_last")
        summary.pop("_first")
        out.append(Event(t, "note", "workload_summary", summary))
    return [e.to_dict() for e in sorted(out, key=lambda e: e.t)]


def build_report(*, run_id: str, kind: str, target: str, started_at: float, ended_at: float,
                 objectives: Iterable[Any] = (), writes: WriteCounts | Mapping[str, Any] | None = None,
                 integrity: Iterable[Any] = (), checklist: Iterable[Any] = (), events: Iterable[Event] = (),
                 rpo: RpoResult | None = None, rtos: Iterable[RtoResult] = (), aborted: bool = False,
                 harness_error: BaseException | bool | None = None, refused: bool = False,
                 dry_run: bool = False, secrets: Iterable[str] = (),
                 extra: Mapping[str, Any] | None = None, level_objective: Any = None) -> dict[str, Any]:
    """The report.json document (docs/CONTRACTS.md) from the run's measured results and timeline.

    Times are epoch seconds in, ISO-8601 out. `extra` adds keys (never replaces contract keys).
    `writes` None means no final read happened: the contract's integer fields are still there (0)
    but `writes.measured` is False and `writes.note` says why; otherwise `writes.measured` is True.
    Every secret value is redacted from the whole document (harness.core.redact).
    """
    objectives = [_plain(o) for o in objectives]
    integrity = [_plain(i) for i in integrity]
    checklist = [_plain(c) for c in checklist]
    for i in integrity:
        if i.get("status") not in INTEGRITY_STATUSES:
            raise ValueError(f"integrity check {i.get('check')!r} has status {i.get('status')!r}; "
                             f"expected one of {', '.join(INTEGRITY_STATUSES)}")
    w = _plain(writes) if writes is not None else {}
    writes_d: dict[str, Any] = {k: int(w.get(k, 0)) for k in WRITE_FIELDS}
    writes_d.update({k: v for k, v in w.items() if k not in writes_d})
    if writes is None:
        writes_d["measured"] = False
        writes_d.setdefault("note", WRITES_NOT_MEASURED)
    else:
        writes_d.setdefault("measured", True)
    evs = list(events)
    level_objective = _plain(level_objective) if level_objective is not None else None
    status, code = decide_exit(objectives, integrity, aborted, harness_error, refused, checklist, dry_run,
                               level_objective)
    doc: dict[str, Any] = {
        "run_id": run_id, "kind": kind, "target": target,
        "started_at": iso(started_at), "ended_at": iso(ended_at),
        "duration_s": round(ended_at - started_at, 3),
        "status": status, "exit_code": code,
        "objectives": objectives, "writes": writes_d, "integrity": integrity, "checklist": checklist,
        "timeline": report_timeline(evs),
    }
    if harness_error and isinstance(harness_error, BaseException):
        doc["error"] = f"{type(harness_error).__name__}: {harness_error}"
    if level_objective is not None:
        doc["level_objective"] = level_objective
    if rpo is not None:
        doc["rpo"] = rpo.to_dict()
    rtos = list(rtos)
    if rtos:
        doc["rto"] = [r.to_dict() for r in rtos]
    lat = latency_stats(evs)
    if lat:
        doc["latency"] = [s.to_dict() for s in lat.values()]
    for k, v in (extra or {}).items():
        if k in doc:
            raise ValueError(f"extra report key {k!r} would replace a contract key")
        doc[k] = v
    return redact(doc, secrets)
