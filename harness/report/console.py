"""Console summary of a drill report (Rich): verdict, objectives, writes, integrity and checklist counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .i18n import service_label
from .model import WRITE_FIELDS, build_view, level_line, writes_line

_STYLE = {"passed": "bold white on green", "missed": "bold white on dark_orange3", "failed": "bold white on red",
          "aborted": "bold white on grey37"}


def print_summary(report: Mapping[str, Any], console: Console | None = None, *,
                  paths: Mapping[str, Path] | None = None, lang: str | None = None) -> None:
    """Print the verdict, an objectives table and one-line counts in `lang` (en, ko); `paths` (from write_report)
    says where the files are."""
    console = console or Console()
    v = build_view(report, lang)
    t = v.t
    console.print(Text(f" {t(v.verdict)} ", style=_STYLE[v.verdict_class]),
                  Text(f" {t('exit code {code}', code=v.exit_code)} | "
                       f"{t('{kind} on {target}', kind=v.kind, target=v.target)} | {v.duration}"))
    if v.objectives:
        table = Table(title=t("Recovery objectives"), title_justify="left")
        for col in ("Service", "Priority", "RTO target", "RTO measured", "RPO target", "RPO measured", "Result"):
            table.add_column(t(col), justify="right" if col.startswith(("RTO", "RPO")) else "left")
        for o in v.objectives:
            style = "green" if o.met else ("red" if o.met is False else "")
            table.add_row(service_label(o.service, v.lang), o.priority, o.rto_target, o.rto_measured, o.rpo_target,
                          o.rpo_measured, Text(t(o.result) + (f" ({o.reason})" if o.reason else ""), style=style))
        console.print(table)
    else:
        console.print(t("No objectives were measured."))
    if level_line(report, t):
        console.print(level_line(report, t), markup=False, highlight=False)
    if not v.writes_measured:
        console.print(f"[bold]{t('Writes')}[/bold]: {t('not measured.')} {writes_line(v.writes, False, t)}",
                      highlight=False)
    elif v.writes:
        counts = ", ".join(f"{t(k.capitalize()) if v.lang != 'en' and k in WRITE_FIELDS else k} {val}"
                           for k, val in v.writes.items())
        console.print(f"[bold]{t('Writes')}[/bold]: {counts}. {writes_line(v.writes, None, t)}", highlight=False)
    ic, cc = v.counts["integrity"], v.counts["checklist"]
    console.print(f"[bold]{t('Integrity')}[/bold]: "
                  + t("{p} pass, {f} fail, {w} warning", p=ic.get("pass", 0), f=ic.get("fail", 0),
                      w=ic.get("warning", 0)), highlight=False)
    console.print(f"[bold]{t('Checklist')}[/bold]: "
                  + t("{p} pass, {f} fail, {s} skipped", p=cc.get("pass", 0), f=cc.get("fail", 0),
                      s=cc.get("skipped", 0)), highlight=False)
    where = None
    if paths:
        where = paths.get("html") or next(iter(paths.values()), None)
    elif report.get("report_dir"):
        where = Path(str(report["report_dir"])) / "report.html"
    if where is not None:
        console.print(f"[bold]{t('Report')}[/bold]: {where}", highlight=False)
