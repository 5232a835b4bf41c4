"""The manager-readable Markdown drill report (report.md)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .i18n import checklist_text, service_label
from .model import (
    WRITE_EXPLANATION,
    WRITE_FIELDS,
    View,
    build_view,
    level_line,
    fmt_duration,
    rpo_line,
    writes_line,
)

_STATUS_MARK = {"pass": "\u2705 pass", "fail": "\u274c fail", "warning": "\u26a0\ufe0f warning", "skipped": "\u23ed skipped"}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip() or " "


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _mark(status: Any, t=None) -> str:
    s = str(status or "").lower()
    if s in _STATUS_MARK:
        icon, word = _STATUS_MARK[s].split(" ", 1)
        return f"{icon} {t(word) if t else word}"
    return s or "?"


def _automation(report: Mapping[str, Any]) -> list[str]:
    """The plan's automation: detector level against the scenario's, escalation and decision time, policy decisions."""
    out: list[str] = []
    det = report.get("detector") if isinstance(report.get("detector"), Mapping) else None
    if det and det.get("max_level") is not None:
        out += ["## Disaster level (detector)", "",
                f"Highest level {det.get('max_level')} ({det.get('max_level_name')}), the scenario's level "
                f"{det.get('expected_level') if det.get('expected_level') is not None else 'not declared'}"
                + (f" ({det.get('expected_level_name')})" if det.get("expected_level") is not None else "")
                + {True: ": match.", False: ": MISMATCH.", None: "."}[det.get("match")], ""]
        if det.get("note"):
            out += [_cell(det["note"]), ""]
    esc = report.get("escalation") if isinstance(report.get("escalation"), Mapping) else None
    if esc and (esc.get("steps") or esc.get("decisions")):
        out += ["## Escalation and decision time", "",
                f"Drill clock: {esc.get('time_scale')} drill seconds per plan second.", ""]
        if esc.get("steps"):
            out += _table(["Level", "Who", "Called at (plan)", "Called at (drill)", "Why"],
                          [(f"L{x.get('level')}", x.get("who"), fmt_duration(x.get("plan_offset_s")),
                            fmt_duration(x.get("drill_offset_s")), x.get("reason")) for x in esc["steps"]]) + [""]
        for d in esc.get("decisions") or []:
            out += [f"Gate {d.get('gate')} is decided by L{d.get('level')} {d.get('who')} "
                    f"(approved by {d.get('approved_by') or 'nobody named'}): {fmt_duration(d.get('plan_s'))} "
                    f"({fmt_duration(d.get('drill_s'))} on the drill clock).", ""]
        if esc.get("decisions") and esc.get("rto"):
            out += _table(["Service", "RTO measured", "RTO with decision time (plan)", "RTO with decision time (drill)"],
                          [(r.get("service"), fmt_duration(r.get("rto_s")), fmt_duration(r.get("rto_with_decision_s")),
                            fmt_duration(r.get("rto_with_decision_drill_s"))) for r in esc["rto"]]) + [""]
    decisions = [d for d in report.get("decisions") or [] if isinstance(d, Mapping)]
    if decisions:
        out += ["## Failover policy decisions", ""]
        out += _table(["Rule", "Measured", "Threshold", "Held / duration (drill)", "Action", "Outcome", "Why"],
                      [(d.get("rule"), d.get("measured"), d.get("threshold"),
                        f"{fmt_duration(d.get('held_s'))} / {fmt_duration(d.get('drill_duration_s'))}",
                        d.get("action"), d.get("outcome"), d.get("reason")) for d in decisions]) + [""]
    return out


def render_markdown(report: Mapping[str, Any], *, view: View | None = None, lang: str | None = None) -> str:
    """Render the report dict (already redacted) as Markdown, in `lang` (en, ko; the view's language if given)."""
    v = view or build_view(report, lang)
    t = v.t
    out: list[str] = []
    icon = {"passed": "\u2705", "missed": "\u274c", "failed": "\u274c", "aborted": "\u26d4"}[v.verdict_class]
    out.append("# " + t("Drill report: {kind}", kind=v.kind or "drill"))
    out.append("")
    out.append(f"## {icon} {t(v.verdict)} ({t('exit code {code}', code=v.exit_code)})")
    out.append("")
    if v.summary:
        out += [v.summary, ""]
    out += _table(["", ""], [
        (t("Run"), f"`{v.run_id}`"),
        (t("Kind"), v.kind),
        (t("Target"), v.target),
        *([(t("Environment"), v.environment_label)] if v.environment_label else []),
        (t("Started"), v.started),
        (t("Ended"), v.ended),
        (t("Duration"), v.duration),
    ])
    out.append("")

    out += ["## " + t("Recovery objectives"), ""]
    if v.objectives:
        c = v.counts["objectives"]
        out += [t("{met} of {total} services met their objectives.", met=c["met"], total=c["total"]), ""]
        out += _table(
            [t(h) for h in ("Service", "Priority", "RTO target", "RTO measured", "RPO target", "RPO measured",
                            "RPO basis", "Result")],
            [(service_label(o.service, v.lang), o.priority, o.rto_target, o.rto_measured, o.rpo_target,
              o.rpo_measured, o.rpo_basis,
              ("\u2705 " + t("met") if o.met else
               ("\u274c " + t("missed: {reason}", reason=o.reason) if o.met is False else t(o.result))))
             for o in v.objectives])
    else:
        out.append(t("No objectives were measured in this run."))
    if level_line(report, t):
        out += ["", level_line(report, t)]
    out.append("")

    if v.phases:
        out += ["### " + t("RTO phase breakdown"), "", t("Time from fault injection to each phase, per service."), ""]
        out += _table([t("Service")] + [c.replace("_", " ") for c in v.phase_columns],
                      [(s, *vals) for s, vals in v.phases])
        out.append("")
    if v.probe_stats:
        out += ["### " + t("Probe latency"), ""]
        out += _table([t("Service"), t("Probes"), t("Errors"), "p50", "p95", "max"],
                      [(p["service"], p["count"], p["errors"], p["p50"], p["p95"], p["max"]) for p in v.probe_stats])
        out.append("")

    out += ["## " + t("Writes during the drill"), "", writes_line(v.writes, v.writes_measured, t), ""]
    if v.writes and v.writes_measured:
        fields = [f for f in WRITE_FIELDS if f in v.writes] + [f for f in v.writes if f not in WRITE_FIELDS]
        out += _table([t(f.capitalize()) if f in WRITE_FIELDS else f.capitalize() for f in fields],
                      [[v.writes.get(f) for f in fields]])
        for name, keys in v.write_keys.items():
            out += ["", f"{name.replace('_', ' ').capitalize()}: " + ", ".join(f"`{k}`" for k in keys)]
        out += ["", f"_{t(WRITE_EXPLANATION)}_", ""]
    line = rpo_line(v.rpo, t)
    if line:
        out += [line, ""]

    out += ["## " + t("Data integrity"), ""]
    if v.integrity:
        out += _table([t("Check"), t("Status"), t("Details")],
                      [(i.get("check", "?"), _mark(i.get("status"), t), i.get("details", "")) for i in v.integrity])
    else:
        out.append(t("No integrity checks were run."))
    out.append("")

    out += ["## " + t("Checklist"), ""]
    if v.checklist_by_phase:
        for _phase, title, items in v.checklist_by_phase:
            out += [f"### {title}", ""]
            out += _table([t("Item"), t("Expected"), t("Observed"), t("Status")],
                          [(*checklist_text(i, v.lang), i.get("observed", ""), _mark(i.get("status"), t))
                           for i in items])
            out.append("")
    else:
        out += [t("No checklist items were recorded."), ""]

    out += _automation(report)

    out += ["## " + t("Key events"), ""]
    if v.key_events:
        out += _table([t("Time"), t("Since fault"), t("Kind"), t("Event"), t("Details")],
                      [(e.clock, e.offset, e.kind, e.event, e.detail) for e in v.key_events])
        if v.key_events_omitted:
            out += ["", t("{n} more events are in report.json.", n=v.key_events_omitted)]
    else:
        out.append(t("No faults, failovers, checks or notes were recorded."))
    out.append("")

    if v.dry_run_calls:
        out += ["## " + t("API calls of the dry run (none was sent)"), ""]
        out += _table([t("API"), t("Operation"), t("Resource"), t("Parameters")], v.dry_run_calls) + [""]
    if v.notes:
        out += ["## " + t("Notes"), ""] + [f"- {_cell(n)}" for n in v.notes] + [""]
    if v.environment:
        out += ["## " + t("Environment"), ""] + _table([t("Key"), t("Value")], v.environment) + [""]
    out.append(t("_Full data in report.json, the timeline chart in report.html, CI results in junit.xml._"))
    return "\n".join(out) + "\n"
