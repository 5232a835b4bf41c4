"""The timeline chart of report.html: probe results per service, write acknowledgements and the disaster level around the fault (matplotlib, Agg, inline SVG)."""

from __future__ import annotations

import io
import math
import re
from typing import Any, Mapping

import matplotlib
from matplotlib.figure import Figure

from .model import KEY_FAILOVER_MARKERS, fault_time, parse_time

BUCKET_S = 0.1
MAX_MARKERS_PER_SERVICE = 600
MAX_EVENT_LINES = 8

_OK, _FAIL, _WARN = "#1a9850", "#d73027", "#f59e0b"
_EVENT_STYLES = (  # (substring, colour, linestyle)
    ("detected", "#e08214", "--"),
    ("promot", "#7b3294", "--"),
    ("switch", "#2166ac", "--"),
)


def _svg_only(svg: str) -> str:
    """Strip the XML prolog and doctype and make the SVG scale with its container."""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    head_end = svg.find(">")
    head = svg[:head_end]
    head = re.sub(r'\swidth="[^"]*"', ' width="100%"', head, count=1)
    head = re.sub(r'\sheight="[^"]*"', "", head, count=1)
    head += ' role="img" aria-label="Timeline of probes and writes around the fault"'
    return head + svg[head_end:]


def _events(series: Mapping[str, Any], report: Mapping[str, Any]) -> list[tuple[float, str, str]]:
    """(epoch t, kind, event) of fault and failover events, from `series.events` or the report timeline."""
    raw = series.get("events")
    if not isinstance(raw, list) or not raw:
        raw = [e for e in report.get("timeline") or [] if isinstance(e, Mapping) and e.get("kind") in ("fault", "failover")]
    out = []
    for e in raw:
        if not isinstance(e, Mapping):
            continue
        t = parse_time(e.get("ts")) if e.get("ts") is not None else parse_time(e.get("t"))
        if t is not None:
            out.append((t, str(e.get("kind", "")), str(e.get("event", ""))))
    return sorted(out)


def _downsample(points: list[tuple[float, bool]]) -> list[tuple[float, bool]]:
    """Fewer markers for long runs: one per time slot, failed if any probe in the slot failed."""
    if len(points) <= MAX_MARKERS_PER_SERVICE:
        return points
    lo, hi = points[0][0], points[-1][0]
    width = max((hi - lo) / MAX_MARKERS_PER_SERVICE, 1e-9)
    slots: dict[int, tuple[float, bool]] = {}
    for x, ok in points:
        k = int((x - lo) / width)
        prev = slots.get(k)
        slots[k] = (prev[0], prev[1] and ok) if prev else (x, ok)
    return sorted(slots.values())


def render_timeline_svg(report: Mapping[str, Any]) -> str:
    """Render the chart as an inline `<svg>` element (renders with empty series too)."""
    series = report.get("series") if isinstance(report.get("series"), Mapping) else {}
    fault_t = fault_time(report)
    probes = [p for p in series.get("probes") or [] if isinstance(p, Mapping) and parse_time(p.get("t")) is not None]
    writes = [w for w in series.get("writes") or [] if isinstance(w, Mapping) and parse_time(w.get("t")) is not None]
    events = _events(series, report)
    if fault_t is None:
        candidates = [parse_time(p["t"]) for p in probes] + [parse_time(w["t"]) for w in writes] + [e[0] for e in events]
        fault_t = min(candidates) if candidates else 0.0

    services: list[str] = []
    for o in report.get("objectives") or []:
        if isinstance(o, Mapping) and o.get("service") and str(o["service"]) not in services:
            services.append(str(o["service"]))
    by_service: dict[str, list[tuple[float, bool]]] = {}
    for p in probes:
        svc = str(p.get("service", "?"))
        by_service.setdefault(svc, []).append((parse_time(p["t"]) - fault_t, bool(p.get("ok"))))
    for svc in by_service:
        if svc not in services:
            services.append(svc)
    services = [s for s in services if s in by_service] or services

    levels = sorted((parse_time(x.get("t")), int(x.get("level") or 0)) for x in series.get("detector") or []
                    if isinstance(x, Mapping) and parse_time(x.get("t")) is not None)
    expected = series.get("expected_level")
    rows = max(len(services), 1)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "drill-report", "font.size": 9}):
        fig = Figure(figsize=(11, 1.6 + 0.38 * rows + 2.0 + 1.4), layout="constrained")
        ax_p, ax_w, ax_l = fig.subplots(3, 1, sharex=True, height_ratios=[0.6 + 0.38 * rows, 2.0, 1.4])

        # probe rows
        if by_service:
            for row, svc in enumerate(services):
                pts = sorted(by_service.get(svc, []))
                pts = _downsample(pts)
                ok_x = [x for x, ok in pts if ok]
                bad_x = [x for x, ok in pts if not ok]
                if ok_x:
                    ax_p.scatter(ok_x, [row] * len(ok_x), marker="|", s=90, color=_OK, linewidths=1.4,
                                 label="probe succeeded")
                if bad_x:
                    ax_p.scatter(bad_x, [row] * len(bad_x), marker="|", s=90, color=_FAIL, linewidths=1.4,
                                 label="probe failed")
            ax_p.set_yticks(range(len(services)), labels=services)
            ax_p.set_ylim(-0.7, len(services) - 0.3)
            ax_p.invert_yaxis()
        else:
            ax_p.set_yticks([])
            ax_p.text(0.5, 0.5, "no probe data", transform=ax_p.transAxes, ha="center", va="center",
                      color="#6b7280", fontsize=12)
        ax_p.set_title("Service probes through the global endpoint", loc="left", fontsize=10)

        # write acknowledgements per 100 ms bucket
        if writes:
            buckets: dict[str, dict[int, int]] = {"ok": {}, "fail": {}, "indeterminate": {}}
            for w in writes:
                k = math.floor((parse_time(w["t"]) - fault_t) / BUCKET_S)
                kind = str(w.get("type", "ok"))
                if kind in buckets:
                    buckets[kind][k] = buckets[kind].get(k, 0) + 1
            all_keys = [k for b in buckets.values() for k in b]
            lo, hi = min(all_keys), max(all_keys)
            xs = [k * BUCKET_S for k in range(lo, hi + 1)]
            acks = [buckets["ok"].get(k, 0) for k in range(lo, hi + 1)]
            ax_w.fill_between(xs, acks, step="post", color=_OK, alpha=0.25, linewidth=0)
            ax_w.step(xs, acks, where="post", color=_OK, linewidth=1.2, label="writes acknowledged / 100 ms")
            for kind, colour, label in (("fail", _FAIL, "writes failed / 100 ms"),
                                        ("indeterminate", _WARN, "writes indeterminate / 100 ms")):
                if buckets[kind]:
                    ys = [buckets[kind].get(k, 0) for k in range(lo, hi + 1)]
                    ax_w.step(xs, ys, where="post", color=colour, linewidth=1.0, label=label)
            ax_w.set_ylim(bottom=0)
        else:
            ax_w.set_yticks([])
            ax_w.text(0.5, 0.5, "no write data", transform=ax_w.transAxes, ha="center", va="center",
                      color="#6b7280", fontsize=12)
        ax_w.set_ylabel("writes / 100 ms")
        ax_w.set_title("Workload writes", loc="left", fontsize=10)

        # disaster level over time (the plan's weighted detector, sampled during the drill)
        if levels:
            ax_l.step([t - fault_t for t, _ in levels], [lv for _, lv in levels], where="post", color="#7b3294",
                      linewidth=1.4, label="disaster level (detector)")
        else:
            ax_l.text(0.5, 0.5, "no detector samples", transform=ax_l.transAxes, ha="center", va="center",
                      color="#6b7280", fontsize=12)
        if isinstance(expected, int) and not isinstance(expected, bool):
            ax_l.axhline(expected, color="#7b3294", linestyle=":", linewidth=1.0, label="expected level (scenario)")
        ax_l.set_ylim(-0.3, 4.3)
        ax_l.set_yticks(range(5))
        ax_l.set_ylabel("level")
        ax_l.set_xlabel("seconds since fault injection")
        ax_l.set_title("Disaster level (0 normal .. 4 catastrophic)", loc="left", fontsize=10)

        # vertical lines: fault injection and key failover events
        for ax in (ax_p, ax_w, ax_l):
            ax.axvline(0, color=_FAIL, linewidth=1.6, label="fault injected" if ax is ax_p else None)
        shown: set[str] = set()
        for t, kind, name in events:
            if len(shown) >= MAX_EVENT_LINES:
                break
            lname = name.lower()
            if kind == "fault" or not any(m in lname for m in KEY_FAILOVER_MARKERS) or name in shown:
                continue
            shown.add(name)
            colour, style = "#4b5563", ":"
            for key, c, ls in _EVENT_STYLES:
                if key in lname:
                    colour, style = c, ls
                    break
            for ax in (ax_p, ax_w, ax_l):
                ax.axvline(t - fault_t, color=colour, linestyle=style, linewidth=1.3,
                           label=name.replace("_", " ") if ax is ax_p else None)
        if not by_service and not writes and not levels:
            ax_w.set_xlim(-5, 5)
        for ax in (ax_p, ax_w, ax_l):
            ax.grid(axis="x", color="#e5e7eb", linewidth=0.6)
            ax.set_axisbelow(True)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)

        handles, labels = [], []
        for ax in (ax_p, ax_w, ax_l):
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab and not lab.startswith("_") and lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=8)

        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return _svg_only(buf.getvalue())
