"""Presentation model of a report dict: verdict, human durations and grouped rows shared by every writer."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from harness.core.durations import format_duration
from harness.core.measure import RTO_PHASE_ORDER
from harness.core.plan import CHECKLIST_PHASES
from harness.core.report import WRITE_FIELDS

from .i18n import Translator, translator

__all__ = ["CHECKLIST_PHASES", "RTO_PHASE_ORDER", "WRITE_FIELDS", "View", "build_view", "fmt_duration", "verdict"]

# Verdict headlines (the md/html banner and the console use exactly these).
PASSED = "PASSED"
FAILED_OBJECTIVES = "FAILED: objectives missed"
FAILED_INTEGRITY = "FAILED: integrity violation"
FAILED_CHECKLIST = "FAILED: checklist items failed"
FAILED_SAFETY = "FAILED: refused by safety"
FAILED_HARNESS = "FAILED: harness error"
FAILED = "FAILED"
ABORTED = "ABORTED"

PHASE_TITLES = {"pre_test": "Before the test", "during_test": "During the test", "post_test": "After the test"}
KEY_EVENT_KINDS = ("fault", "failover", "check", "note")
# Failover events worth a vertical line in the chart, matched as substrings of the event name.
KEY_FAILOVER_MARKERS = ("detected", "promot", "traffic_switched", "switch")
NOT_MEASURED = "not measured"

WRITE_EXPLANATION = (
    "lost = acknowledged writes missing after recovery (data loss); "
    "recovered = writes with an unknown outcome (timeout, dropped connection) that turned out to be stored; "
    "unexpected = stored records nobody ever attempted (must be 0)."
)


def fmt_duration(seconds: Any, *, missing: str = "\u2014") -> str:
    """A report value in seconds as text, in the core's one format (`harness.core.durations.format_duration`:
    "0.35s", "2.4s", "15m", "1h30m"); `missing` for None/NaN, "\u221e" for infinity, the text itself for a
    non-number."""
    if seconds is None or isinstance(seconds, bool):
        return missing
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if math.isnan(s):
        return missing
    if math.isinf(s):
        return "\u221e" if s > 0 else "-\u221e"
    return ("-" if s < 0 else "") + format_duration(abs(s))


def fmt_offset(seconds: float | None) -> str:
    """A signed offset from fault injection: "T+2.4s", "T-5s", or "" when unknown."""
    if seconds is None:
        return ""
    if abs(seconds) < 0.0005:
        return "T+0s"
    return ("T+" if seconds >= 0 else "T-") + fmt_duration(abs(seconds))


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an epoch number or an ISO-8601 string (naive means UTC); None if unusable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def fmt_clock(value: Any) -> str:
    """A timestamp as "2025-03-01 10:00:00 UTC" (the input text when it does not parse)."""
    t = parse_time(value)
    if t is None:
        return "" if value is None else str(value)
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def event_time(event: Mapping[str, Any]) -> float | None:
    """Epoch seconds of a timeline event (prefers the numeric `ts`, falls back to ISO `t`)."""
    for key in ("ts", "t"):
        t = parse_time(event.get(key))
        if t is not None:
            return t
    return None


def verdict(report: Mapping[str, Any]) -> str:
    """The headline verdict, decided by the exit code first (docs/CONTRACTS.md), then by status and items.

    0 passed; 130 aborted (interrupted); 5 refused by safety; 1 harness error; 4 integrity violation;
    3 objectives missed (or, when every objective was met, checklist items failed). Without a known
    exit code the status and the items decide.
    """
    code = report.get("exit_code")
    by_code = {0: PASSED, 130: ABORTED, 5: FAILED_SAFETY, 1: FAILED_HARNESS, 4: FAILED_INTEGRITY}
    if isinstance(code, int) and not isinstance(code, bool) and code in by_code:
        return by_code[code]
    objectives_missed = any(o.get("met") is False for o in report.get("objectives") or [] if isinstance(o, Mapping))
    checklist_failed = any(_status(i) == "fail" for i in report.get("checklist") or [])
    if code == 3:
        return FAILED_CHECKLIST if checklist_failed and not objectives_missed else FAILED_OBJECTIVES
    status = str(report.get("status") or "").lower()
    if status == "aborted":
        return ABORTED
    if status == "passed":
        return PASSED
    if any(_status(i) == "fail" for i in report.get("integrity") or []):
        return FAILED_INTEGRITY
    if objectives_missed:
        return FAILED_OBJECTIVES
    if checklist_failed:
        return FAILED_CHECKLIST
    return FAILED


def verdict_class(text: str) -> str:
    """CSS class (and colour family) of a verdict."""
    if text == PASSED:
        return "passed"
    if text == ABORTED:
        return "aborted"
    if text == FAILED_OBJECTIVES:
        return "missed"
    return "failed"


def _status(item: Any) -> str:
    return str(item.get("status") or "").lower() if isinstance(item, Mapping) else ""


@dataclass(frozen=True)
class ObjectiveRow:
    """One service's objectives, formatted."""

    service: str
    priority: str
    rto_target: str
    rto_measured: str
    rpo_target: str
    rpo_measured: str
    rto_ok: bool | None
    rpo_ok: bool | None
    met: bool | None
    result: str
    reason: str
    rpo_basis: str = ""


def _within(measured: Any, target: Any) -> bool | None:
    if target is None:
        return None
    if measured is None:
        return False
    try:
        return float(measured) <= float(target)
    except (TypeError, ValueError):
        return None


def objective_row(o: Mapping[str, Any], t: Translator | None = None) -> ObjectiveRow:
    """Format one objective; `reason` says in words why it was missed (empty when met).

    The core's own `reason` is used when the objective carries one (it is written with the same
    duration format); otherwise the reason is derived from the figures. A service the run did not
    measure (`measured: false`) shows "not measured"; a stateless one (`rpo_basis: "stateless"`)
    has no RPO to show.
    """
    t = t or translator()
    rto_m, rto_t = o.get("rto_measured_s"), o.get("rto_target_s")
    rpo_m, rpo_t = o.get("rpo_measured_s"), o.get("rpo_target_s")
    measured = o.get("measured") is not False
    stateless = o.get("rpo_basis") == "stateless"
    rto_ok = _within(rto_m, rto_t) if measured else None
    rpo_ok = None if stateless or (rpo_m is None and o.get("rpo_basis") == "not_measured") else _within(rpo_m, rpo_t)
    met = o.get("met")
    if met is None and (rto_ok is not None or rpo_ok is not None):
        met = rto_ok is not False and rpo_ok is not False
    reasons = []
    if o.get("reason"):
        reasons.append(str(o["reason"]))
    else:
        if not measured:
            reasons.append(t("not measured in this run"))
        elif rto_m is None and rto_t is not None:
            reasons.append(t("service never recovered"))
        elif rto_ok is False:
            reasons.append(t("RTO {m} exceeds target {t}", m=fmt_duration(rto_m), t=fmt_duration(rto_t)))
        if measured and rpo_m is None and rpo_t is not None and rto_m is not None and not stateless:
            reasons.append(t("RPO not measured"))
        elif rpo_ok is False and rpo_m is not None:
            reasons.append(t("RPO {m} exceeds target {t}", m=fmt_duration(rpo_m), t=fmt_duration(rpo_t)))
    if met is False and not reasons:
        reasons.append(t("objective not met"))
    result = "met" if met else ("missed" if met is False else "not judged")
    if not measured:
        rto_text = t(NOT_MEASURED)
    elif rto_t is not None:
        rto_text = fmt_duration(rto_m, missing=t("not recovered"))
    else:
        rto_text = fmt_duration(rto_m)
    if stateless and rpo_m is None:
        rpo_text = t("n/a (stateless)")
    elif rpo_m is None and (not measured or o.get("rpo_basis") == "not_measured"):
        rpo_text = t(NOT_MEASURED)
    else:
        rpo_text = fmt_duration(rpo_m)
    return ObjectiveRow(
        service=str(o.get("service", "?")),
        priority=str(o.get("priority") or ""),
        rto_target=fmt_duration(rto_t),
        rto_measured=rto_text,
        rpo_target=fmt_duration(rpo_t),
        rpo_measured=rpo_text,
        rto_ok=rto_ok,
        rpo_ok=rpo_ok,
        met=met,
        result=result,
        reason="; ".join(reasons) if met is False else "",
        rpo_basis=str(o.get("rpo_basis") or "").replace("_", " "),
    )


@dataclass(frozen=True)
class KeyEvent:
    """A timeline event worth showing to a reader (faults, failovers, checks, notes)."""

    clock: str
    offset: str
    kind: str
    event: str
    detail: str


@dataclass
class View:
    """Everything the md, html and console writers show, computed once from the report dict."""

    report: Mapping[str, Any]
    verdict: str
    verdict_class: str
    exit_code: Any
    run_id: str
    kind: str
    target: str
    started: str
    ended: str
    duration: str
    summary: str
    objectives: list[ObjectiveRow]
    writes: dict[str, Any]
    write_keys: dict[str, list[Any]]
    writes_measured: bool
    rpo: dict[str, Any]
    integrity: list[dict[str, Any]]
    checklist_by_phase: list[tuple[str, str, list[dict[str, Any]]]]
    phase_columns: list[str]
    phases: list[tuple[str, list[str]]]
    probe_stats: list[dict[str, Any]]
    key_events: list[KeyEvent]
    key_events_omitted: int
    notes: list[str]
    environment: list[tuple[str, str]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    fault_t: float | None = None
    #: "name (kind)" of the environment the drill ran against
    environment_label: str = ""
    #: API calls a dry run would have made (none was sent): (api, operation, resource, params as JSON)
    dry_run_calls: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: the reader's language (harness.report.i18n) and its translator
    lang: str = "en"
    t: Translator = field(default_factory=translator)


MAX_KEY_EVENTS = 200


def fault_time(report: Mapping[str, Any]) -> float | None:
    """Epoch time of the (first) fault injection: `series.fault_t`, else the first fault event."""
    series = report.get("series") if isinstance(report.get("series"), Mapping) else {}
    t = parse_time(series.get("fault_t")) if series else None
    if t is not None:
        return t
    times = [event_time(e) for e in report.get("timeline") or [] if isinstance(e, Mapping) and e.get("kind") == "fault"]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def _detail(data: Any) -> str:
    if not isinstance(data, Mapping) or not data:
        return "" if data in (None, {}, []) else str(data)
    parts = []
    for k, v in data.items():
        if isinstance(v, float):
            v = round(v, 3)
        text = f"{k}={v}"
        parts.append(text if len(text) <= 80 else text[:77] + "...")
    return ", ".join(parts)


def _count(items: list[Any], key: str = "status") -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        s = str(i.get(key) or "unknown").lower() if isinstance(i, Mapping) else "unknown"
        out[s] = out.get(s, 0) + 1
    return out


def build_view(report: Mapping[str, Any], lang: str | None = None) -> View:
    """Compute the presentation model of a (redacted) report dict, for readers of `lang` (en, ko)."""
    tr = translator(lang)
    started, ended = parse_time(report.get("started_at")), parse_time(report.get("ended_at"))
    duration = fmt_duration(ended - started) if started is not None and ended is not None else "\u2014"
    v = verdict(report)
    objectives = [objective_row(o, tr) for o in report.get("objectives") or [] if isinstance(o, Mapping)]
    raw_writes = dict(report.get("writes") or {})
    # counts go in the table; the capped key lists (lost_keys, ...) are named below it
    writes = {k: v for k, v in raw_writes.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    write_keys = {k: list(v) for k, v in raw_writes.items() if isinstance(v, (list, tuple)) and v}
    writes_measured = raw_writes.get("measured") is not False
    integrity = [dict(i) for i in report.get("integrity") or [] if isinstance(i, Mapping)]
    checklist = [dict(i) for i in report.get("checklist") or [] if isinstance(i, Mapping)]

    known = [p for p in CHECKLIST_PHASES if any(i.get("phase") == p for i in checklist)]
    others = []
    for i in checklist:
        p = str(i.get("phase") or "other")
        if p not in CHECKLIST_PHASES and p not in others:
            others.append(p)
    grouped = [
        (p, tr(PHASE_TITLES[p]) if p in PHASE_TITLES else p.replace("_", " ").capitalize(), [i for i in checklist if str(i.get("phase") or "other") == p])
        for p in known + others
    ]

    raw_phases = report.get("phases") if isinstance(report.get("phases"), Mapping) else {}
    names: list[str] = []
    for per in raw_phases.values():
        if isinstance(per, Mapping):
            for name in per:
                if name not in names:
                    names.append(name)
    columns = [p for p in RTO_PHASE_ORDER if p in names] + [p for p in names if p not in RTO_PHASE_ORDER]
    phases = [
        (str(svc), [fmt_duration(per.get(c)) if isinstance(per, Mapping) else "\u2014" for c in columns])
        for svc, per in raw_phases.items()
    ]

    stats_raw = report.get("probe_stats") if isinstance(report.get("probe_stats"), Mapping) else {}
    probe_stats = []
    for svc, st in stats_raw.items():
        st = st if isinstance(st, Mapping) else {}
        probe_stats.append({
            "service": str(svc),
            "count": st.get("count", "\u2014"),
            "errors": st.get("errors", "\u2014"),
            "p50": fmt_duration(st.get("p50_s")),
            "p95": fmt_duration(st.get("p95_s")),
            "max": fmt_duration(st.get("max_s")),
        })

    ft = fault_time(report)
    events: list[KeyEvent] = []
    omitted = 0
    for e in report.get("timeline") or []:
        if not isinstance(e, Mapping) or e.get("kind") not in KEY_EVENT_KINDS:
            continue
        if len(events) >= MAX_KEY_EVENTS:
            omitted += 1
            continue
        t = event_time(e)
        events.append(KeyEvent(
            clock=fmt_clock(e.get("t") if e.get("t") is not None else e.get("ts")),
            offset=fmt_offset(t - ft) if t is not None and ft is not None else "",
            kind=str(e.get("kind")),
            event=str(e.get("event", "")),
            detail=_detail(e.get("data")),
        ))

    env = report.get("environment")
    environment = [(str(k), str(val)) for k, val in env.items()] if isinstance(env, Mapping) else (
        [("environment", str(env))] if env else [])
    env_label = (f"{env.get('name')} ({env.get('kind')})" if isinstance(env, Mapping) and env.get("name") else "")
    calls = [(f"{c.get('api', '')} {c.get('service', '')}".strip(), str(c.get("operation", "")),
              str(c.get("resource", "")), json.dumps(c.get("params") or {}, ensure_ascii=False, sort_keys=True))
             for c in report.get("dry_run_calls") or [] if isinstance(c, Mapping)]
    notes = [str(n) for n in report.get("notes") or []] if isinstance(report.get("notes"), list) else (
        [str(report["notes"])] if report.get("notes") else [])

    counts = {
        "objectives": {"met": sum(1 for o in objectives if o.met), "missed": sum(1 for o in objectives if o.met is False),
                       "total": len(objectives)},
        "integrity": _count(integrity),
        "checklist": _count(checklist),
    }
    return View(
        report=report, verdict=v, verdict_class=verdict_class(v), exit_code=report.get("exit_code"),
        run_id=str(report.get("run_id", "")), kind=str(report.get("kind", "")), target=str(report.get("target", "")),
        started=fmt_clock(report.get("started_at")), ended=fmt_clock(report.get("ended_at")), duration=duration,
        summary=str(report.get("summary") or ""), objectives=objectives, writes=writes, write_keys=write_keys,
        writes_measured=writes_measured,
        rpo=dict(report.get("rpo") or {}) if isinstance(report.get("rpo"), Mapping) else {},
        integrity=integrity, checklist_by_phase=grouped, phase_columns=columns, phases=phases,
        probe_stats=probe_stats, key_events=events, key_events_omitted=omitted, notes=notes,
        environment=environment, counts=counts, fault_t=ft, environment_label=env_label, dry_run_calls=calls,
        lang=tr.lang, t=tr,
    )


def writes_line(writes: Mapping[str, Any], measured: bool | None = None, t: Translator | None = None) -> str:
    """One sentence about the write ledger for the reader in a hurry ("not measured" without a final read)."""
    t = t or translator()
    if measured is None:
        measured = writes.get("measured") is not False
    if not measured:
        return t("Writes were not measured: no final read happened in this run, so nothing can be said "
                 "about lost writes.")
    if not writes:
        return t("No writes were recorded.")
    lost = writes.get("lost") or 0
    unexpected = writes.get("unexpected") or 0
    ack = writes.get("acknowledged", 0)
    if lost or unexpected:
        return t("{lost} of {ack} acknowledged writes were lost and {unexpected} unexpected records appeared.",
                 lost=lost, ack=ack, unexpected=unexpected)
    return t("All {ack} acknowledged writes survived; no unexpected records.", ack=ack)


def level_line(report: Mapping[str, Any], t: Translator | None = None) -> str | None:
    """The scenario's level objective (report.json `level_objective`) in one sentence; None without one."""
    t = t or translator()
    lvl = report.get("level_objective")
    if not lvl:
        return None
    result = t("met") if lvl.get("met") else t("missed")
    return t("Level {level} ({name}): downtime {m} measured, {o} allowed on the drill clock ({e} x {s}): {result}",
             level=lvl.get("level"), name=t(str(lvl.get("name"))), m=fmt_duration(lvl.get("measured_downtime_s")),
             o=fmt_duration(lvl.get("objective_s")), e=fmt_duration(lvl.get("expected_downtime_s")),
             s=lvl.get("time_scale"), result=result)


def rpo_line(rpo: Mapping[str, Any], t: Translator | None = None) -> str:
    """One sentence about the measured RPO (empty when no RPO block was given)."""
    if not rpo:
        return ""
    t = t or translator()
    text = t("Measured RPO {rpo}, {lost} acknowledged write(s) lost", rpo=fmt_duration(rpo.get("rpo_s")),
             lost=rpo.get("lost", 0))
    before, surviving = rpo.get("last_ack_before_fault"), rpo.get("last_surviving_ack")
    if before is not None or surviving is not None:
        text += t(" (last acknowledged write before the fault: {before}; last one that survived: {surviving})",
                  before=fmt_clock(before) or "—", surviving=fmt_clock(surviving) or "—")
    return text + "."
