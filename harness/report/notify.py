"""Notifications as the plan orders them: internal and customer notices from the drill's events, with escalation.

From a built report (already redacted) this derives the drill's events (fault injected, failover started, each
service restored, drill finished with RTO/RPO), renders an internal and a customer notice per event (Jinja2, en
or ko), always writes them to the report dir's outbox (RFC 5322 messages plus `outbox/notifications.json`), and,
when configured, sends them by SMTP and POSTs them to a webhook. A delivery failure is recorded, never raised:
communication problems do not change a drill's verdict.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import httpx
import jinja2

from harness.core.durations import format_duration
from harness.core.escalation import schedule
from harness.errors import UsageError

from .i18n import SERVICE_NAMES, check_lang
from .model import event_time, fault_time, fmt_clock, parse_time

__all__ = ["NOTIFY_PREFIX", "NotifyConfig", "Notification", "escalation_steps", "events_of", "render", "dispatch"]

NOTIFY_PREFIX = "drill_notify_"
#: configuration key -> environment variable (the configuration wins)
KEYS = {
    "drill_notify_outbox": "DRILL_NOTIFY_OUTBOX",
    "drill_notify_smtp_url": "DRILL_NOTIFY_SMTP_URL",
    "drill_notify_smtp_from": "DRILL_NOTIFY_SMTP_FROM",
    "drill_notify_internal_to": "DRILL_NOTIFY_INTERNAL_TO",
    "drill_notify_customer_to": "DRILL_NOTIFY_CUSTOMER_TO",
    "drill_notify_webhook_url": "DRILL_NOTIFY_WEBHOOK_URL",
    "drill_notify_status_url": "DRILL_NOTIFY_STATUS_URL",
}
EVENTS = ("fault_injected", "failover_started", "service_restored", "drill_finished")
AUDIENCES = ("internal", "customer")
TIMEOUT_S = 5.0

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates/notifications"),
                          autoescape=False, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=True)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{key} {value!r} is not a boolean (true/false)")


def _addresses(key: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = tuple(str(a).strip() for a in items if str(a).strip())
    bad = [a for a in out if not re.fullmatch(r"[^@\s,]+@[^@\s,]+", a)]
    if bad:
        raise UsageError(f"{key}: {bad[0]!r} is not an e-mail address")
    return out


def _url(key: str, value: Any, schemes: tuple[str, ...]) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.hostname:
        raise UsageError(f"{key} {text!r} is not a {' or '.join(schemes)} URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise UsageError(f"{key} {text!r} has an invalid port") from e
    return text


@dataclass(frozen=True)
class NotifyConfig:
    """Where notifications go: always the outbox (unless turned off), SMTP and the webhook only when configured."""

    outbox: bool = True
    smtp_url: str | None = None
    smtp_from: str = "drill@kerp.io"
    internal_to: tuple[str, ...] = ("oncall@kerp.io",)
    customer_to: tuple[str, ...] = ()
    webhook_url: str | None = None
    status_url: str | None = None

    @classmethod
    def from_sources(cls, configuration: Mapping[str, Any] | None = None,
                     environ: Mapping[str, str] | None = None) -> "NotifyConfig":
        """From the configuration's drill_notify_* keys, else their DRILL_NOTIFY_* variables; UsageError (exit 2)
        naming a bad value."""
        cfg = dict(configuration or {})
        env = os.environ if environ is None else environ
        unknown = [k for k in cfg if k.startswith(NOTIFY_PREFIX) and k not in KEYS]
        if unknown:
            raise UsageError(f"unknown notification key {unknown[0]!r} ({', '.join(KEYS)})")
        raw = {k: (cfg[k] if cfg.get(k) not in (None, "") else env.get(var)) for k, var in KEYS.items()}
        raw = {k: v for k, v in raw.items() if v not in (None, "")}
        kw: dict[str, Any] = {}
        if "drill_notify_outbox" in raw:
            kw["outbox"] = _bool("drill_notify_outbox", raw["drill_notify_outbox"])
        if "drill_notify_smtp_url" in raw:
            kw["smtp_url"] = _url("drill_notify_smtp_url", raw["drill_notify_smtp_url"], ("smtp",))
        if "drill_notify_smtp_from" in raw:
            kw["smtp_from"] = _addresses("drill_notify_smtp_from", raw["drill_notify_smtp_from"])[0]
        for key in ("internal_to", "customer_to"):
            if f"drill_notify_{key}" in raw:
                kw[key] = _addresses(f"drill_notify_{key}", raw[f"drill_notify_{key}"])
        if "drill_notify_webhook_url" in raw:
            kw["webhook_url"] = _url("drill_notify_webhook_url", raw["drill_notify_webhook_url"], ("http", "https"))
        if "drill_notify_status_url" in raw:
            kw["status_url"] = str(raw["drill_notify_status_url"])
        return cls(**kw)

    def recipients(self, audience: str) -> tuple[str, ...]:
        return self.internal_to if audience == "internal" else self.customer_to


@dataclass(frozen=True)
class DrillEvent:
    """One moment of the drill worth telling people about."""

    event: str
    at: float
    service: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    """One rendered notice: its event, audience, language, subject and text."""

    seq: int
    event: DrillEvent
    audience: str
    lang: str
    subject: str
    body: str

    @property
    def name(self) -> str:
        svc = f"-{self.event.service}" if self.event.service else ""
        return f"{self.seq:02d}-{self.event.event}{svc}-{self.audience}"

    def payload(self, run_id: str) -> dict[str, Any]:
        return {"run_id": run_id, "seq": self.seq, "event": self.event.event, "service": self.event.service,
                "audience": self.audience, "lang": self.lang, "at": fmt_clock(self.event.at),
                "ts": self.event.at, "subject": self.subject, "text": self.body}


def events_of(report: Mapping[str, Any]) -> list[DrillEvent]:
    """The drill's events from the report: the fault, the first failover step after it, each service's
    recovery (its measured RTO), and the end of the drill. A run without a fault has only its end."""
    out: list[DrillEvent] = []
    ft = fault_time(report)
    timeline = [e for e in report.get("timeline") or [] if isinstance(e, Mapping)]
    if ft is not None:
        fault = next((e for e in timeline if e.get("kind") == "fault"
                      and (e.get("data") or {}).get("phase", "inject") == "inject"), None)
        out.append(DrillEvent("fault_injected", ft, data={"what": str((fault or {}).get("event", "fault"))}))
        step = next((e for e in timeline if e.get("kind") == "failover" and (event_time(e) or 0) >= ft), None)
        if step is not None:
            out.append(DrillEvent("failover_started", event_time(step) or ft, data={"step": str(step.get("event"))}))
        firsts = {str(r.get("service")): parse_time(r.get("first_success_t"))
                  for r in report.get("rto") or [] if isinstance(r, Mapping)}
        for svc, rto_s in _recoveries(report, ft).items():
            if rto_s is not None:
                out.append(DrillEvent("service_restored", firsts.get(svc) or ft + rto_s, svc, {"rto_s": rto_s}))
    end = parse_time(report.get("ended_at"))
    out.append(DrillEvent("drill_finished", end if end is not None else (ft or 0.0)))
    return sorted(out, key=lambda e: (e.at, EVENTS.index(e.event)))


def _recoveries(report: Mapping[str, Any], ft: float | None) -> dict[str, float | None]:
    """Service -> measured RTO in seconds (None: never recovered) of the services the fault touched: the report's
    `rto` entries, else its measured objectives."""
    if ft is None:
        return {}
    rto = [r for r in report.get("rto") or [] if isinstance(r, Mapping)]
    if rto:
        return {str(r.get("service")): (float(r["rto_s"]) if r.get("rto_s") is not None else None) for r in rto}
    return {str(o.get("service")): (float(o["rto_measured_s"]) if o.get("rto_measured_s") is not None else None)
            for o in report.get("objectives") or [] if isinstance(o, Mapping) and o.get("measured") is not False}


def escalation_steps(plan: Any, report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The plan's escalation matrix applied to this drill: who is called when (offsets from the fault), by when
    they must respond, and whether the incident lasted long enough to reach them.

    The offsets are the matrix's one reading (`harness.core.escalation.schedule`, shared with the drill clock),
    counted from the fault. A timed level is reached when the incident lasted past its offset; a level behind a
    trigger without a time (SLA violation, a major outage that persists) when an objective was missed or a
    service never recovered.
    """
    calls = schedule(getattr(plan, "escalation", ()) or ())
    if not calls:
        return []
    ft = fault_time(report)
    recoveries = _recoveries(report, ft)
    never = any(v is None for v in recoveries.values())
    resolved_after = None if (never or not recoveries) else max(v for v in recoveries.values() if v is not None)
    missed = any(isinstance(o, Mapping) and o.get("met") is False and o.get("measured") is not False
                 for o in report.get("objectives") or [])
    out: list[dict[str, Any]] = []
    for call in calls:
        lvl = call.level
        lasted = ft is not None and (call.offset_s == 0.0 or resolved_after is None or resolved_after > call.offset_s)
        reached = lasted if call.timed else (missed or (lasted and never))
        out.append({"level": lvl.level, "name": lvl.name, "response_time_s": lvl.response_time_s,
                    "call_at_s": call.offset_s, "respond_by_s": call.offset_s + lvl.response_time_s,
                    "called": bool(reached), "reason": call.reason, "authority": list(lvl.authority)})
    return out


def _dur(seconds: Any, lang: str) -> str:
    if seconds is None:
        return "-"
    text = format_duration(float(seconds))
    if lang == "ko":
        for en, ko in (("h", "시간"), ("m", "분"), ("s", "초")):
            text = re.sub(rf"(?<=\d){en}(?![a-z])", ko, text)
    return text


def render(report: Mapping[str, Any], plan: Any, lang: str = "en", *,
           status_url: str | None = None) -> list[Notification]:
    """An internal and a customer notice (in `lang`) for every event of the drill."""
    lang = check_lang(lang)
    steps = escalation_steps(plan, report)
    ft = fault_time(report)
    objectives = [o for o in report.get("objectives") or [] if isinstance(o, Mapping)]
    affected = [str(o.get("service")) for o in objectives if o.get("outage_observed")] or \
        [str(r.get("service")) for r in report.get("rto") or [] if isinstance(r, Mapping)]
    out: list[Notification] = []
    for ev in events_of(report):
        ctx = {
            "lang": lang, "run_id": report.get("run_id"), "kind": report.get("kind"), "event": ev.event,
            "at": fmt_clock(ev.at), "since_fault": _dur(ev.at - ft, lang) if ft is not None else None,
            "service": ev.service, "service_ko": SERVICE_NAMES.get(ev.service or "", ev.service),
            "data": ev.data, "rto": _dur(ev.data.get("rto_s"), lang) if "rto_s" in ev.data else None,
            "affected": affected, "service_names": SERVICE_NAMES, "status": report.get("status"),
            "exit_code": report.get("exit_code"), "summary": report.get("summary") or "",
            "objectives": [{**o, "rto": _dur(o.get("rto_measured_s"), lang), "rpo": _dur(o.get("rpo_measured_s"), lang),
                            "rto_target": _dur(o.get("rto_target_s"), lang),
                            "rpo_target": _dur(o.get("rpo_target_s"), lang)} for o in objectives],
            "escalation": [{**s, "call_at": _dur(s["call_at_s"], lang) if s["call_at_s"] is not None else None,
                            "respond_by": _dur(s["respond_by_s"], lang) if s["respond_by_s"] is not None else None,
                            "response_time": _dur(s["response_time_s"], lang)} for s in steps],
            "status_url": status_url, "dry_run": bool(report.get("dry_run")),
        }
        for audience in AUDIENCES:
            text = _ENV.get_template(f"{audience}.{lang}.txt.j2").render(**ctx)
            subject, _, body = text.partition("\n")
            out.append(Notification(len(out) + 1, ev, audience, lang, subject.removeprefix("Subject:").strip(),
                                    body.lstrip("\n")))
    return out


def _message(n: Notification, cfg: NotifyConfig, run_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = n.subject
    msg["From"] = cfg.smtp_from
    msg["To"] = ", ".join(cfg.recipients(n.audience)) or "undisclosed-recipients:;"
    msg["Date"] = formatdate(n.event.at, usegmt=True)
    msg["X-Drill-Run"] = run_id
    msg["X-Drill-Event"] = n.event.event
    msg["X-Drill-Audience"] = n.audience
    msg.set_content(n.body)
    return msg


def _send_smtp(url: str, msgs: list[tuple[Notification, EmailMessage, tuple[str, ...]]]) -> dict[int, str]:
    parts = urlsplit(url)
    results: dict[int, str] = {}
    try:
        with smtplib.SMTP(parts.hostname, parts.port or 25, timeout=TIMEOUT_S) as smtp:
            for n, msg, to in msgs:
                try:
                    smtp.send_message(msg, to_addrs=list(to))
                    results[n.seq] = "sent"
                except smtplib.SMTPException as e:
                    results[n.seq] = f"failed: {type(e).__name__}: {e}"
    except (OSError, smtplib.SMTPException) as e:
        for n, _, _ in msgs:
            results.setdefault(n.seq, f"failed: {type(e).__name__}: {e}")
    return results


def dispatch(report: Mapping[str, Any], plan: Any, out_dir: Path | str, cfg: NotifyConfig | None = None,
             lang: str = "en") -> list[dict[str, Any]]:
    """Render the drill's notifications, write them to `<out_dir>/outbox/`, send them where configured.

    Returns one record per notification: `seq`, `event`, `service`, `audience`, `at`, `subject`, `outbox` (file
    name or null), `smtp` and `webhook` (`sent`, HTTP status, `off`, `no recipients` or `failed: ...`).
    """
    cfg = cfg or NotifyConfig()
    run_id = str(report.get("run_id", ""))
    topo = ((report.get("environment") or {}).get("topology") or {}) if isinstance(report.get("environment"),
                                                                                  Mapping) else {}
    status_url = cfg.status_url or ((topo.get("status_page") or {}).get("url") if isinstance(topo, Mapping) else None)
    notes = render(report, plan, lang, status_url=status_url)
    records = [{"seq": n.seq, "event": n.event.event, "service": n.event.service, "audience": n.audience,
                "lang": n.lang, "at": fmt_clock(n.event.at), "subject": n.subject, "outbox": None,
                "smtp": "off", "webhook": "off"} for n in notes]
    msgs = [_message(n, cfg, run_id) for n in notes]
    outbox = Path(out_dir) / "outbox"
    if cfg.outbox:
        outbox.mkdir(parents=True, exist_ok=True)
        for n, msg, rec in zip(notes, msgs, records):
            path = outbox / f"{n.name}.eml"  # the message as sent
            path.write_bytes(bytes(msg))
            (outbox / f"{n.name}.txt").write_text(  # the same, readable
                f"To: {msg['To']}\nSubject: {n.subject}\nDate: {msg['Date']}\n\n{n.body}", encoding="utf-8")
            rec["outbox"] = path.name
    if cfg.smtp_url:
        todo = []
        for n, msg, rec in zip(notes, msgs, records):
            to = cfg.recipients(n.audience)
            if to:
                todo.append((n, msg, to))
            else:
                rec["smtp"] = "no recipients"
        for seq, result in _send_smtp(cfg.smtp_url, todo).items():
            records[seq - 1]["smtp"] = result
    if cfg.webhook_url:
        try:
            with httpx.Client(timeout=TIMEOUT_S) as client:
                for n, rec in zip(notes, records):
                    try:
                        r = client.post(cfg.webhook_url, json=n.payload(run_id))
                        rec["webhook"] = r.status_code if r.is_success else f"failed: HTTP {r.status_code}"
                    except httpx.HTTPError as e:
                        rec["webhook"] = f"failed: {type(e).__name__}: {e}"
        except httpx.HTTPError as e:  # pragma: no cover - the client itself
            for rec in records:
                rec["webhook"] = f"failed: {e}"
    if cfg.outbox:
        (outbox / "notifications.json").write_text(json.dumps(
            {"run_id": run_id, "lang": lang, "escalation": escalation_steps(plan, report), "notifications": records},
            indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return records
