"""Console summary of a drill report (Rich): verdict, objectives, writes, integrity and checklist counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .model import build_view, writes_line

_STYLE = {"passed": "bold white on green", "missed": "bold white on dark_orange3", "failed": "bold white on red",
          "aborted": "bold white on grey37"}


def print_summary(report: Mapping[str, Any], console: Console | None = None, *,
                  paths: Mapping[str, Path] | None = None) -> None:
    """Print the verdict, an objectives table and one-line counts; `paths` (from write_report) says where the files are."""
    console = console or Console()
    v = build_view(report)
    console.print(Text(f" {v.verdict} ", style=_STYLE[v.verdict_class]),
                  Text(f" exit code {v.exit_code} | {v.kind} on {v.target} | {v.duration}"))
    if v.objectives:
        table = Table(title="Recovery objectives", title_justify="left")
        for col in ("Service", "Priority", "RTO target", "RTO measured", "RPO target", "RPO measured", "Result"):
            table.add_column(col, justify="right" if col.startswith(("RTO", "RPO")) else "left")
        for o in v.objectives:
            style = "green" if o.met else ("red" if o.met is False else "")
            table.add_row(o.service, o.priority, o.rto_target, o.rto_measured, o.rpo_target, o.rpo_measured,
                          Text(o.result + (f" ({o.reason})" if o.reason else ""), style=style))
        console.print(table)
    else:
        console.print("No objectives were measured.")
    if not v.writes_measured:
        console.print(f"[bold]Writes[/bold]: not measured. {writes_line(v.writes, False)}", highlight=False)
    elif v.writes:
        counts = ", ".join(f"{k} {val}" for k, val in v.writes.items())
        console.print(f"[bold]Writes[/bold]: {counts}. {writes_line(v.writes)}", highlight=False)
    ic, cc = v.counts["integrity"], v.counts["checklist"]
    console.print(f"[bold]Integrity[/bold]: {ic.get('pass', 0)} pass, {ic.get('fail', 0)} fail, "
                  f"{ic.get('warning', 0)} warning", highlight=False)
    console.print(f"[bold]Checklist[/bold]: {cc.get('pass', 0)} pass, {cc.get('fail', 0)} fail, "
                  f"{cc.get('skipped', 0)} skipped", highlight=False)
    where = None
    if paths:
        where = paths.get("html") or next(iter(paths.values()), None)
    elif report.get("report_dir"):
        where = Path(str(report["report_dir"])) / "report.html"
    if where is not None:
        console.print(f"[bold]Report[/bold]: {where}", highlight=False)
