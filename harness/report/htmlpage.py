"""The self-contained HTML drill report (report.html): Jinja2 template, inline CSS, inline SVG chart."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Mapping

import jinja2
from markupsafe import Markup

from .chart import render_timeline_svg
from .i18n import checklist_text, service_label
from .model import WRITE_EXPLANATION, WRITE_FIELDS, View, build_view, level_line, rpo_line, writes_line

log = logging.getLogger(__name__)

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("harness.report", "templates"),
    autoescape=True,  # every value is escaped; only the chart SVG we render ourselves is marked safe
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(report: Mapping[str, Any], *, view: View | None = None, generated_at: str | None = None,
                lang: str | None = None) -> str:
    """Render the report dict (already redacted) as one HTML page with no external references, in `lang`."""
    v = view or build_view(report, lang)
    t = v.t
    try:
        chart = Markup(render_timeline_svg(report))
        chart_error = ""
    except Exception as e:  # a broken chart must not cost the whole report
        log.warning("timeline chart could not be drawn: %s", e, exc_info=True)
        chart, chart_error = Markup(""), t("The timeline chart could not be drawn: {e}", e=e)
    fields = [f for f in WRITE_FIELDS if f in v.writes] + [f for f in v.writes if f not in WRITE_FIELDS]
    return _ENV.get_template("report.html.j2").render(
        v=v,
        _=t,
        service_label=lambda svc: service_label(svc, v.lang),
        checklist_text=lambda item: checklist_text(item, v.lang),
        chart=chart,
        chart_error=chart_error,
        write_fields=fields,
        writes_line=writes_line(v.writes, v.writes_measured, t),
        write_explanation=t(WRITE_EXPLANATION),
        rpo_line=rpo_line(v.rpo, t),
        level_line=level_line(report, t),
        generated_at=generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
