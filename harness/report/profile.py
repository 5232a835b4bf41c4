"""The profile summary: one row per scenario a profile ran (verdict, level, downtime against the level's objective,
worst RTO/RPO, exit code), written as report.json, report.md and report.html at the top of the profile's report
dir and printed as a console table. The overall exit code is the worst of the scenarios' by severity."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from rich.console import Console
from rich.table import Table

from harness.core.durations import format_duration
from harness.core.timeline import iso
from harness.errors import ExitCode

#: exit codes from the most to the least severe: interrupted (the profile did not finish), an integrity violation
#: (data is wrong), a harness error (a drill broke: state unknown), objectives missed, refused by safety (nothing
#: was injected), usage, passed
SEVERITY: tuple[int, ...] = (ExitCode.INTERRUPTED, ExitCode.INTEGRITY_VIOLATION, ExitCode.HARNESS_ERROR,
                             ExitCode.OBJECTIVES_MISSED, ExitCode.REFUSED_BY_SAFETY, ExitCode.USAGE, ExitCode.PASSED)


def worst_exit(codes: Iterable[int]) -> int:
    """The most severe of the exit codes (SEVERITY; an unknown code counts as a harness error); 0 when none."""
    rank = {int(c): i for i, c in enumerate(SEVERITY)}
    known = [int(c) if int(c) in rank else int(ExitCode.HARNESS_ERROR) for c in codes]
    return min(known, key=lambda c: rank[c], default=int(ExitCode.PASSED))


def _worst(objectives: list[Mapping[str, Any]], key: str) -> tuple[float | None, str | None]:
    vals = [(o.get(key), o.get("service")) for o in objectives if o.get(key) is not None]
    if not vals:
        return None, None
    v, svc = max(vals, key=lambda x: x[0])
    return v, svc


def scenario_row(scenario: Mapping[str, Any], report: Mapping[str, Any] | None, exit_code: int,
                 report_dir: Path | None, error: str | None = None) -> dict[str, Any]:
    """One row of the summary from the scenario's own report.json (None when it wrote none)."""
    row: dict[str, Any] = {"scenario": scenario["id"], "level": scenario["level"], "title": scenario.get("title", ""),
                           "target": scenario.get("target"), "exit_code": int(exit_code),
                           "report_dir": str(report_dir) if report_dir else None}
    if report is None:
        row.update(status="failed" if exit_code else "passed", run_id=None, downtime_s=None, objective_s=None,
                   level_met=None, rto_worst_s=None, rto_worst_service=None, rpo_worst_s=None,
                   rpo_worst_service=None, error=error or "the scenario wrote no report")
        return row
    objs = list(report.get("objectives") or [])
    lvl = report.get("level_objective") or {}
    rto, rto_svc = _worst(objs, "rto_measured_s")
    rpo, rpo_svc = _worst(objs, "rpo_measured_s")
    row.update(status=report.get("status"), run_id=report.get("run_id"), duration_s=report.get("duration_s"),
               downtime_s=lvl.get("measured_downtime_s"), objective_s=lvl.get("objective_s"),
               level_met=lvl.get("met") if lvl else None, rto_worst_s=rto, rto_worst_service=rto_svc,
               rpo_worst_s=rpo, rpo_worst_service=rpo_svc,
               objectives_met=sum(1 for o in objs if o.get("met")), objectives=len(objs))
    if error or report.get("error"):
        row["error"] = error or report.get("error")
    return row


def build(*, run_id: str, profile: str, title: str, started_at: float, ended_at: float,
          rows: list[dict[str, Any]], drawn: list[str], stopped: str | None,
          interrupted: bool = False) -> dict[str, Any]:
    """The profile's report.json (docs/CONTRACTS.md, "profile summary")."""
    ran = {r["scenario"] for r in rows}
    code = worst_exit(r["exit_code"] for r in rows)
    if interrupted:
        code = int(ExitCode.INTERRUPTED)
    elif stopped and code == ExitCode.PASSED:  # stopped without a failing scenario: the lab said no
        code = int(ExitCode.HARNESS_ERROR)
    return {"run_id": run_id, "kind": "profile", "profile": profile, "title": title,
            "started_at": iso(started_at), "ended_at": iso(ended_at), "duration_s": round(ended_at - started_at, 3),
            "status": "passed" if code == ExitCode.PASSED else ("aborted" if code == ExitCode.INTERRUPTED else "failed"),
            "exit_code": code, "stopped": stopped, "drawn": list(drawn),
            "not_run": [s for s in drawn if s not in ran], "scenarios": rows}


def _fmt(v: float | None) -> str:
    return "-" if v is None else format_duration(v)


def _cells(r: Mapping[str, Any]) -> list[str]:
    down = "-" if r.get("downtime_s") is None and r.get("objective_s") is None else \
        f"{_fmt(r.get('downtime_s'))} / {_fmt(r.get('objective_s'))}" + (
            "" if r.get("level_met") is None else (" ok" if r["level_met"] else " MISSED"))
    return [r["scenario"], str(r["level"]), str(r.get("status")), down,
            f"{_fmt(r.get('rto_worst_s'))}" + (f" ({r['rto_worst_service']})" if r.get("rto_worst_service") else ""),
            f"{_fmt(r.get('rpo_worst_s'))}" + (f" ({r['rpo_worst_service']})" if r.get("rpo_worst_service") else ""),
            str(r["exit_code"])]


COLUMNS = ("Scenario", "Level", "Verdict", "Downtime / level objective", "RTO worst", "RPO worst", "Exit")


def render_markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"# Profile {summary['profile']}: {summary['status']} (exit {summary['exit_code']})", "",
             f"{summary['title']}. Run `{summary['run_id']}`, {summary['started_at']} .. {summary['ended_at']} "
             f"({_fmt(summary['duration_s'])}).", ""]
    if summary.get("stopped"):
        lines += [f"**Stopped:** {summary['stopped']}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " | Report |", "|" + "---|" * (len(COLUMNS) + 1)]
    for r in summary["scenarios"]:
        rep = f"[{Path(r['report_dir']).name}/report.md]({Path(r['report_dir']).name}/report.md)" \
            if r.get("report_dir") else "-"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + f" | {rep} |")
    if summary.get("not_run"):
        lines += ["", f"Not run: {', '.join(summary['not_run'])}"]
    errors = [r for r in summary["scenarios"] if r.get("error")]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {r['scenario']}: {' '.join(str(r['error']).split())}" for r in errors]
    return "\n".join(lines) + "\n"


def render_html(summary: Mapping[str, Any]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in (*COLUMNS, "Report"))
    body = []
    for r in summary["scenarios"]:
        link = (f'<a href="{e(Path(r["report_dir"]).name)}/report.html">report</a>' if r.get("report_dir") else "-")
        cls = "pass" if r["exit_code"] == 0 else "fail"
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{e(c)}</td>" for c in _cells(r)) + f"<td>{link}</td></tr>")
    stopped = f"<p><b>Stopped:</b> {e(summary['stopped'])}</p>" if summary.get("stopped") else ""
    not_run = f"<p>Not run: {e(', '.join(summary['not_run']))}</p>" if summary.get("not_run") else ""
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>"
            f"{e(summary['profile'])} {e(summary['status'])}</title><style>body{{font-family:sans-serif}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
            "tr.pass td:nth-child(3){color:#070}tr.fail td:nth-child(3){color:#b00}</style></head><body>"
            f"<h1>Profile {e(summary['profile'])}: {e(summary['status'])} (exit {summary['exit_code']})</h1>"
            f"<p>{e(summary['title'])}. Run <code>{e(summary['run_id'])}</code>, {e(summary['started_at'])} .. "
            f"{e(summary['ended_at'])}.</p>{stopped}<table><tr>{head}</tr>{''.join(body)}</table>{not_run}"
            "</body></html>\n")


def write(summary: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and report.html of the profile into `out_dir` (the scenarios' dirs are inside)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(summary), encoding="utf-8")
    paths["html"].write_text(render_html(summary), encoding="utf-8")
    return paths


def print_table(summary: Mapping[str, Any], console: Console, paths: Mapping[str, Path] | None = None) -> None:
    t = Table(title=f"profile {summary['profile']}: {summary['status']} (exit {summary['exit_code']})",
              title_justify="left")
    for c in COLUMNS:
        t.add_column(c)
    for r in summary["scenarios"]:
        t.add_row(*_cells(r), style="green" if r["exit_code"] == 0 else "red")
    console.print(t)
    if summary.get("stopped"):
        console.print(f"stopped: {summary['stopped']}", markup=False, highlight=False)
    if summary.get("not_run"):
        console.print(f"not run: {', '.join(summary['not_run'])}", markup=False, highlight=False)
    if paths:
        console.print(f"profile report: {paths['html']}", markup=False, highlight=False)
