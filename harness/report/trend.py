"""`drill trend`: RTO and RPO per service over the recorded runs, p50/p95 per scenario, and a regression flag for a run worse than the recent p95 (one self-contained HTML page)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import jinja2
import matplotlib
from markupsafe import Markup
from matplotlib.figure import Figure

from harness.core.durations import format_duration

from .history import Run

#: how many earlier runs of the same scenario make "recent", and how many are needed before a run is judged
WINDOW = 10
MIN_BASELINE = 3
METRICS = (("rto_s", "RTO"), ("rpo_s", "RPO"))
#: measurement noise a run may exceed the recent p95 by without being flagged: 5 % of it, at least 0.1 s
NOISE_REL, NOISE_ABS_S = 0.05, 0.1


def worse_than(value: float, p95: float) -> bool:
    """A regression: `value` above the recent p95 by more than the noise margin."""
    return value - p95 > max(NOISE_REL * p95, NOISE_ABS_S)

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_COLOURS = ("#2166ac", "#d73027", "#1a9850", "#7b3294", "#e08214", "#4b5563")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, linear between closest ranks."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True)
class Regression:
    """A run whose measured value is worse than the p95 of the recent runs of its scenario."""

    run_id: str
    kind: str
    service: str
    metric: str  # "RTO" | "RPO"
    value_s: float
    recent_p95_s: float
    baseline_runs: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": self.kind, "service": self.service, "metric": self.metric,
                "value_s": self.value_s, "recent_p95_s": self.recent_p95_s, "baseline_runs": self.baseline_runs}


def _measured(runs: Iterable[Run]) -> list[Run]:
    """Runs that measured something (no dry runs), oldest first."""
    return sorted((r for r in runs if not r.dry_run), key=lambda r: (r.started_at, r.run_id))


def _value(run: Run, service: str, attr: str) -> float | None:
    o = next((o for o in run.objectives if o.service == service), None)
    return None if o is None or o.measured is False else getattr(o, attr)


def regressions(runs: Iterable[Run], window: int = WINDOW, min_baseline: int = MIN_BASELINE) -> list[Regression]:
    """Every (run, service, metric) worse than the p95 of up to `window` earlier runs of the same kind by more than
    the noise margin (judged once `min_baseline` earlier values exist)."""
    out: list[Regression] = []
    ordered = _measured(runs)
    for i, run in enumerate(ordered):
        earlier = [r for r in ordered[:i] if r.kind == run.kind]
        for o in run.objectives:
            for attr, label in METRICS:
                value = _value(run, o.service, attr)
                if value is None:
                    continue
                base = [v for v in (_value(r, o.service, attr) for r in earlier) if v is not None][-window:]
                if len(base) < min_baseline:
                    continue
                p95 = percentile(base, 95)
                if worse_than(value, p95):
                    out.append(Regression(run.run_id, run.kind, o.service, label, value, round(p95, 3), len(base)))
    return out


def scenario_stats(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """p50/p95 of RTO and RPO per (scenario kind, service) over the measured runs."""
    rows = []
    ordered = _measured(runs)
    for kind in sorted({r.kind for r in ordered}):
        of_kind = [r for r in ordered if r.kind == kind]
        for service in sorted({o.service for r in of_kind for o in r.objectives}):
            row: dict[str, Any] = {"kind": kind, "service": service, "runs": len(of_kind)}
            for attr, label in METRICS:
                vals = [v for v in (_value(r, service, attr) for r in of_kind) if v is not None]
                row[label] = ({"n": len(vals), "p50_s": round(percentile(vals, 50), 3),
                               "p95_s": round(percentile(vals, 95), 3)} if vals else {"n": 0})
            rows.append(row)
    return rows


def _chart(runs: list[Run], attr: str, label: str, flagged: set[tuple[str, str]]) -> str:
    """One line per service over run start times (the report chart's matplotlib style, inline SVG); flagged runs
    ringed in red."""
    services = sorted({o.service for r in runs for o in r.objectives})
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "drill-trend", "font.size": 9}):
        fig = Figure(figsize=(11, 3.4), layout="constrained")
        ax = fig.subplots()
        drawn = False
        for n, svc in enumerate(services):
            pts = [(datetime.fromisoformat(r.started_at), _value(r, svc, attr), r.run_id) for r in runs]
            pts = [p for p in pts if p[1] is not None]
            if not pts:
                continue
            drawn = True
            colour = _COLOURS[n % len(_COLOURS)]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3.5, linewidth=1.2,
                    color=colour, label=svc)
            bad = [p for p in pts if (p[2], svc) in flagged]
            if bad:
                ax.scatter([p[0] for p in bad], [p[1] for p in bad], s=110, facecolors="none", edgecolors="#b91c1c",
                           linewidths=1.8, zorder=5, label="regression")
        if not drawn:
            ax.text(0.5, 0.5, f"no {label} measured yet", transform=ax.transAxes, ha="center", va="center",
                    color="#6b7280", fontsize=12)
        ax.set_ylabel(f"{label} (s)")
        ax.set_title(f"{label} per service over time", loc="left", fontsize=10)
        ax.grid(axis="y", color="#e5e7eb", linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        handles, labels = ax.get_legend_handles_labels()
        uniq = {lab: h for h, lab in zip(handles, labels) if lab and not lab.startswith("_")}
        if uniq:
            fig.legend(list(uniq.values()), list(uniq), loc="outside right upper", frameon=False, fontsize=8)
        fig.autofmt_xdate()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    return svg[svg.find("<svg"):]


def trend_data(runs: Iterable[Run]) -> dict[str, Any]:
    """What the page shows, as data (also `drill trend --json`)."""
    runs = list(runs)
    return {"runs": len(runs), "scenarios": scenario_stats(runs),
            "regressions": [r.to_dict() for r in regressions(runs)], "window": WINDOW, "min_baseline": MIN_BASELINE,
            "noise_margin": {"relative": NOISE_REL, "absolute_s": NOISE_ABS_S}}


def render_trend_html(runs: Iterable[Run], generated_at: str | None = None) -> str:
    runs = _measured(runs)
    data = trend_data(runs)
    regs = regressions(runs)
    flagged_by = {(g.run_id, g.service) for g in regs}
    rtable = []
    for r in reversed(runs):
        flags = [g for g in regs if g.run_id == r.run_id]
        rtable.append({"run": r, "flags": flags,
                       "cells": {o.service: (o.rto_s, o.rpo_s) for o in r.objectives}})
    services = sorted({o.service for r in runs for o in r.objectives})
    return _ENV.get_template("trend.html.j2").render(
        data=data, regressions=regs, rows=rtable, services=services, fmt=_fmt,
        rto_chart=Markup(_chart(runs, "rto_s", "RTO", {(g.run_id, g.service) for g in regs if g.metric == "RTO"})),
        rpo_chart=Markup(_chart(runs, "rpo_s", "RPO", {(g.run_id, g.service) for g in regs if g.metric == "RPO"})),
        flagged=flagged_by,
        generated_at=generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))


def _fmt(v: float | None) -> str:
    return "–" if v is None else format_duration(v)
