"""Checks of the single-component disasters (levels 1 and 2 of the plan's catalog): the level's downtime on the
drill clock, no failover, nothing acknowledged lost, sessions within authentication's RPO, a service left
untouched, invoice numbers neither reused nor skipped. Each records one `check` event in the run's timeline and
returns its verdict; a failed check also fails the run (as `exercises.check_fault_isolation` does: the session's
error names it), since chaoslib does not judge a method probe's tolerance. The Gherkin steps assert on the verdict."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from harness.core import escalation, measure, outages
from harness.drill import session as drill_session
from harness.errors import ConfigError, HarnessError, UsageError
from harness.targets import _lab
from harness.targets.postgres import probes as pg_probes
from harness.targets.router import probes as router_probes
from harness.workload import find_primary_dsn

__all__ = ["invoice_numbers_continuous", "nothing_acknowledged_lost", "no_failover", "service_unaffected",
           "sessions_within_rpo", "within_level_downtime"]

#: the workload's data sets by op f, and the catalog service each stands for
DATA_SETS = {"write": "voucher-service", "invoice": "tax-invoice-service", "session": "authentication"}


def _check(s, what: str, ok: bool, **data: Any) -> None:
    s.event("check", what, status="pass" if ok else "fail", **data)
    if not ok:
        s.harness_error = s.harness_error or f"check failed: {what}"


def _first_fault(s) -> float:
    if s.fault_t is None:
        raise HarnessError("no fault was injected in this drill: nothing to judge")
    return s.fault_t


def level_downtime_s(s, level: int | None, configuration: dict | None) -> tuple[int, float, float]:
    """(level, its expected downtime on the drill clock, the time scale): the level from `level` or configuration
    drill_level, the scale from drill_time_scale (default 0.01, harness.core.escalation.time_scale)."""
    cfg = configuration or {}
    try:
        lvl, scale, downtime = escalation.level_downtime(s.plan, level if level is not None else cfg.get("drill_level"),
                                                         cfg.get("drill_time_scale"))
    except ConfigError as e:
        raise UsageError(f"{e} (drill_level, drill_time_scale)") from e
    return lvl.level, downtime, scale


@drill_session.judged_only_after_a_fault()
def within_level_downtime(level: int | None = None, recovery_timeout_s: float = 30.0, consecutive: int = 3,
                          configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """Every probed service kept or regained service within the disaster level's expected downtime on the drill
    clock: waits (up to `recovery_timeout_s`) until no service is in an outage, then judges each service's
    longest outage since the first fault (a failed probe to the start of the next `consecutive` successes), as the
    report's `level_objective` does at the end of the run. The verdict is the step's (a Gherkin drill asserts it);
    the run's exit code comes from the report's level objective (exit 3 when missed), not from this check."""
    s = drill_session.current()
    level, downtime, scale = level_downtime_s(s, level, configuration)
    since = _first_fault(s)
    services = list(s.workload.probes.services) if s.workload is not None and s.workload.probes else []
    if not services:
        raise HarnessError("no service is probed in this drill (start the workload first)")

    def found() -> dict[str, list[outages.Outage]]:
        probes = s.timeline.of_kind("probe")
        return {svc: outages.outages(probes, svc, since, consecutive) for svc in services}

    deadline = time.monotonic() + recovery_timeout_s
    while True:
        by_service = found()
        if all(not o or o[-1].end is not None for o in by_service.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    longest = {svc: outages.longest_outage_s(o) for svc, o in by_service.items()}
    ok = all(v is not None and v <= downtime for v in longest.values())
    s.event("check", f"every service kept or regained service within the level {level} downtime "
                     f"({downtime:g} s on the drill clock)", status="pass" if ok else "fail",
            level=level, downtime_s=downtime, allowed_s=downtime, time_scale=scale,
           longest_outage_s={k: None if v is None else round(v, 3) for k, v in longest.items()},
           outages={k: len(v) for k, v in by_service.items()})
    return ok


def _flips_since(state: dict[str, Any], since: float) -> list[dict[str, Any]]:
    out = []
    for f in state.get("flips") or []:
        try:
            at = datetime.fromisoformat(str(f.get("at"))).timestamp()
        except ValueError:
            at = since  # unreadable: counted
        if at >= since:
            out.append(f)
    return out


def no_failover(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """No failover happened in this drill: the global endpoint is still on `region` and did not flip since the
    drill started, and `region`'s PostgreSQL is still the primary (the other region's a standby)."""
    s = drill_session.current()
    state = router_probes.router_state(configuration=configuration)
    flips = _flips_since(state, s.started_at)
    roles = pg_probes.roles(configuration=configuration)
    want = {region: "primary", _lab.other(region): "standby"}
    ok = state.get("active_region") == region and not flips and roles == want
    _check(s, f"no failover: the global endpoint stays on {region}, its PostgreSQL stays the primary", ok,
           active_region=state.get("active_region"), flips=flips, postgres=roles)
    return ok


def _lost(s, f: str) -> measure.RpoResult | None:
    from harness.drill.finalize import judged_ops

    keys = (s.final_keys_by_f or {}).get(f)
    if keys is None:
        return None
    ops, _ = judged_ops(s.timeline.ops, f, f, s.timeline.events)  # the records the report judges
    return measure.rpo(ops, keys, _first_fault(s), f=f)


@drill_session.judged_only_after_a_fault()
def nothing_acknowledged_lost(kinds: list[str] | None = None, configuration: dict | None = None,
                              secrets: dict | None = None) -> bool:
    """No acknowledged record of the workload's data sets `kinds` (op f: write = vouchers, invoice = tax invoices,
    session = sessions; default all three) is missing from the final read (after stop_workload)."""
    s = drill_session.current()
    kinds = list(kinds or DATA_SETS)
    unknown = [k for k in kinds if k not in DATA_SETS]
    if unknown:
        raise UsageError(f"unknown data set(s) {unknown} ({', '.join(DATA_SETS)})")
    if s.final_keys_by_f is None:
        raise HarnessError("the final state was not read (stop_workload first)")
    results = {k: _lost(s, k) for k in kinds}
    lost = {k: (None if r is None else r.lost) for k, r in results.items()}
    ok = all(v == 0 for v in lost.values())
    _check(s, f"nothing acknowledged lost ({', '.join(kinds)})", ok, lost=lost)
    return ok


@drill_session.judged_only_after_a_fault()
def sessions_within_rpo(service: str = "authentication", configuration: dict | None = None,
                        secrets: dict | None = None) -> bool:
    """Sessions acknowledged to the probes before the fault that are gone after it (the final read on the Redis
    that is master now) span no more than `service`'s RPO in the plan."""
    s = drill_session.current()
    if s.final_keys_by_f is None:
        raise HarnessError("the final state was not read (stop_workload first)")
    limit = s.plan.service(service).rpo_s
    r = _lost(s, "session")
    ok = r is not None and r.rpo_s <= limit and not r.lower_bound
    _check(s, f"sessions kept within the RPO of {service} ({limit:g} s)", ok, rpo_limit_s=limit,
           rpo_s=None if r is None else round(r.rpo_s, 3), lost=None if r is None else r.lost,
           measured=r is not None)
    return ok


@drill_session.judged_only_after_a_fault()
def service_unaffected(services: list[str] | str, configuration: dict | None = None,
                       secrets: dict | None = None) -> bool:
    """Each of `services` did not notice the fault: every one of its probes since the first fault succeeded."""
    s = drill_session.current()
    since = _first_fault(s)
    names = [services] if isinstance(services, str) else list(services)
    seen: dict[str, dict[str, Any]] = {}
    for svc in names:
        probes = [e for e in s.timeline.of_kind("probe") if e.data.get("service") == svc and e.t >= since]
        failed = [e for e in probes if not e.data.get("ok")]
        seen[svc] = {"probes": len(probes), "failed": len(failed),
                     "first_error": (failed[0].data.get("error") or failed[0].data.get("status")) if failed else None}
    ok = all(v["probes"] and not v["failed"] for v in seen.values())
    _check(s, f"{', '.join(names)} unaffected by the fault", ok, services=seen)
    return ok


def invoice_numbers_continuous(margin_s: float = 0.5, configuration: dict | None = None,
                               secrets: dict | None = None) -> bool:
    """Tax invoices failed cleanly and no invoice number was reused or skipped, read on the primary database.

    For the probe's company: every number acknowledged in this drill is there with its acknowledged Popbill
    reference (none issued twice), the numbers run 1..max without a gap and the gap-free counter equals the max
    (none skipped); while the probe's requests were answered 502 (Popbill unreachable; from the first 502 +
    `margin_s` to the start of the last one) no invoice was committed (the app inserts only after Popbill
    answered). Numbers committed though the probe got no answer (a timeout) are listed, not failed: they are the
    run's indeterminate requests."""
    import psycopg

    s = drill_session.current()
    probes = s.workload.probes if s.workload is not None else None
    if probes is None or not probes.invoices:
        raise HarnessError("no tax invoice was acknowledged in this drill: the invoice numbers cannot be judged")
    company = int(probes.company_id)
    acked = {int(k.rpartition(":")[2]): ref for k, ref in probes.invoices.items()
             if int(k.partition(":")[0]) == company}
    lo, hi = min(acked), max(acked)
    failed = [e for e in s.timeline.of_kind("probe")
              if e.data.get("service") == "tax-invoice-service" and not e.data.get("ok")]
    statuses: dict[str, int] = {}
    for e in failed:
        statuses[str(e.data.get("status"))] = statuses.get(str(e.data.get("status")), 0) + 1
    bad_gateway = [e for e in failed if e.data.get("status") == 502]
    window = ((bad_gateway[0].t + margin_s, bad_gateway[-1].t - float(bad_gateway[-1].data.get("latency_s") or 0))
              if bad_gateway else None)
    dsn = find_primary_dsn(_lab.resolve(configuration).lab.topology())
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = {no: (ref, at) for no, ref, at in conn.execute(
            "SELECT invoice_no, popbill_ref, extract(epoch FROM issued_at)::float8 FROM tax_invoices"
            " WHERE company_id = %s AND invoice_no >= %s", (company, lo)).fetchall()}
        n, top = conn.execute("SELECT count(*), coalesce(max(invoice_no), 0) FROM tax_invoices WHERE company_id = %s",
                              (company,)).fetchone()
        counter = conn.execute("SELECT last_value FROM counters WHERE name = %s",
                               (f"tax_invoice:{company}",)).fetchone()
    counter = counter[0] if counter else None
    skipped = sorted(set(range(lo, top + 1)) - set(rows))
    missing = sorted(set(acked) - set(rows))
    reissued = sorted(k for k in acked if k in rows and rows[k][0] != acked[k])
    during_outage = sorted(k for k, (_, at) in rows.items() if window and window[0] < at < window[1])
    indeterminate = sorted(set(rows) - set(acked))
    # a dry run cut nothing: no 502 to expect, the numbers are still judged
    ok = ((bool(bad_gateway) or s.dry_run) and not (skipped or missing or reissued or during_outage)
          and n == top == counter)
    _check(s, "tax invoices failed cleanly; no invoice number reused or skipped", ok, company_id=company,
           acknowledged=len(acked), first=lo, last=hi, skipped=skipped[:20], missing=missing[:20],
           reissued=reissued[:20], committed_during_outage=during_outage[:20],
           committed_unacknowledged=indeterminate[:20], rows=n, max_invoice_no=top, counter=counter,
           failed_requests=statuses, outage_window_s=round(window[1] - window[0], 3) if window else None)
    return ok
