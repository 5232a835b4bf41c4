"""Pure measurements over a run's timeline: write counts (Jepsen set), RPO, RTO with phases, objectives, latency."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from harness.core.durations import format_duration
from harness.core.plan import Plan, PlanError
from harness.core.timeline import Event, Op, iso

#: How many lost / unexpected keys a result lists (the counts are always complete).
KEY_LIST_CAP = 20

#: Canonical column order of RTO phases in reports (RtoResult.phases themselves are in time order);
#: unknown phase names follow in their own order.
RTO_PHASE_ORDER = ("outage_observed", "detected", "decided", "approved", "promoted", "traffic_switched", "scaled",
                   "first_success", "recovered")

#: ObjectiveResult.reason of a catalog service that has no measurement in the run.
NOT_MEASURED = "not measured in this run"


def _iso(t: float | None) -> str | None:
    return None if t is None else iso(t)


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# --- write counts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteCounts:
    """Outcome of the workload's writes against the final read (Jepsen set semantics)."""

    attempted: int
    acknowledged: int
    lost: int
    recovered: int
    unexpected: int
    indeterminate: int
    failed: int
    failed_but_present: int = 0
    lost_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = ()
    failed_present_keys: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No acknowledged write lost, nothing unexpected, no 'failed' write applied."""
        return self.lost == 0 and self.unexpected == 0 and self.failed_but_present == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted, "acknowledged": self.acknowledged, "lost": self.lost,
            "recovered": self.recovered, "unexpected": self.unexpected, "indeterminate": self.indeterminate,
            "failed": self.failed, "failed_but_present": self.failed_but_present,
            "lost_keys": list(self.lost_keys), "unexpected_keys": list(self.unexpected_keys),
            "failed_present_keys": list(self.failed_present_keys),
        }


@dataclass(frozen=True)
class _Outcome:
    key: str
    process: str
    invoke_t: float | None
    type: str  # ok | fail | indeterminate (an invoke without completion counts as indeterminate)
    t: float | None  # completion time (None when never completed)


def _outcomes(ops: Iterable[Op], f: str = "write") -> dict[str, _Outcome]:
    """The outcome per key, over every attempt at it (a retried write has several).

    ok if any attempt was acknowledged (at its first ack); else indeterminate if any attempt was
    indeterminate or an invoke never completed; else fail.
    """
    invokes: dict[str, int] = {}
    first_invoke: dict[str, float] = {}
    process: dict[str, str] = {}
    completions: dict[str, list[Op]] = {}
    for op in sorted(ops, key=lambda o: o.t):
        if op.f != f:
            continue
        process.setdefault(op.key, op.process)
        if op.type == "invoke":
            invokes[op.key] = invokes.get(op.key, 0) + 1
            first_invoke.setdefault(op.key, op.t)
        else:
            completions.setdefault(op.key, []).append(op)
    out: dict[str, _Outcome] = {}
    for key in process:
        done = completions.get(key, [])
        oks = [c for c in done if c.type == "ok"]
        if oks:
            kind, t = "ok", oks[0].t
        elif any(c.type == "indeterminate" for c in done) or invokes.get(key, 0) > len(done):
            kind, t = "indeterminate", (done[-1].t if done else None)
        else:
            kind, t = "fail", done[-1].t
        out[key] = _Outcome(key, process[key], first_invoke.get(key), kind, t)
    return out


def write_counts(ops: Iterable[Op], final_keys: Iterable[str], f: str = "write") -> WriteCounts:
    """Counts of the run's writes against the keys present in the final read.

    `final_keys` are the keys present after recovery, already filtered by the caller to the run's
    key space (e.g. its request-id prefix). lost = acknowledged but absent; recovered = indeterminate
    (or invoked, never completed) but present; unexpected = present but never invoked;
    failed_but_present = reported as failed, yet applied (a client-semantics violation).
    """
    outcomes = _outcomes(ops, f)
    present = set(final_keys)
    lost = sorted(k for k, o in outcomes.items() if o.type == "ok" and k not in present)
    unexpected = sorted(present - set(outcomes))
    failed_present = sorted(k for k, o in outcomes.items() if o.type == "fail" and k in present)
    indet = [k for k, o in outcomes.items() if o.type == "indeterminate"]
    return WriteCounts(
        attempted=len(outcomes),
        acknowledged=sum(1 for o in outcomes.values() if o.type == "ok"),
        lost=len(lost),
        recovered=sum(1 for k in indet if k in present),
        unexpected=len(unexpected),
        indeterminate=len(indet),
        failed=sum(1 for o in outcomes.values() if o.type == "fail"),
        failed_but_present=len(failed_present),
        lost_keys=tuple(lost[:KEY_LIST_CAP]),
        unexpected_keys=tuple(unexpected[:KEY_LIST_CAP]),
        failed_present_keys=tuple(failed_present[:KEY_LIST_CAP]),
    )


# --- RPO ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RpoResult:
    """Measured recovery point: the window of acknowledged writes that were lost, and how many.

    rpo_s is 0 when no acknowledged write was lost. Otherwise, with W the newest lost
    acknowledgement and S the newest surviving acknowledgement at or before W:
    rpo_s = t(W) - t(S). In the usual case (the primary dies at the fault, everything after S
    was not replicated) W is the last acknowledgement before the fault, so this is exactly
    "last ack before the fault minus last surviving ack". Lost acks after the fault (writes taken
    by a doomed primary) extend the window instead of hiding.
    When no acknowledged write at or before W survived, S is unknown: the window is measured from
    the first acknowledged write of the run and `lower_bound` is True (the real loss may reach
    further back than the workload can see).
    """

    rpo_s: float
    lost: int
    last_ack_before_fault_t: float | None
    last_surviving_ack_t: float | None
    first_lost_ack_t: float | None = None
    last_lost_ack_t: float | None = None
    lost_before_fault: int = 0
    lost_after_fault: int = 0
    acknowledged: int = 0
    lower_bound: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rpo_s": _round(self.rpo_s), "lost": self.lost,
            "last_ack_before_fault_t": _iso(self.last_ack_before_fault_t),
            "last_surviving_ack_t": _iso(self.last_surviving_ack_t),
            "first_lost_ack_t": _iso(self.first_lost_ack_t), "last_lost_ack_t": _iso(self.last_lost_ack_t),
            "lost_before_fault": self.lost_before_fault, "lost_after_fault": self.lost_after_fault,
            "acknowledged": self.acknowledged, "lower_bound": self.lower_bound, "note": self.note,
        }


def rpo(ops: Iterable[Op], final_keys: Iterable[str], fault_t: float, f: str = "write") -> RpoResult:
    """Measured RPO of the run (see RpoResult for the definition and its edge cases).

    Acknowledgement time is the `ok` operation's time. Writers (processes) are merged: the window
    is about the database's history, not one writer's.
    """
    outcomes = _outcomes(ops, f)
    present = set(final_keys)
    acks = sorted(((o.t, k) for k, o in outcomes.items() if o.type == "ok" and o.t is not None))
    indet = [k for k, o in outcomes.items() if o.type == "indeterminate"]
    before = [t for t, _ in acks if t <= fault_t]
    last_before = before[-1] if before else None
    if not acks:
        note = "no acknowledged writes"
        if indet:
            note += f"; {len(indet)} indeterminate ({sum(1 for k in indet if k in present)} present after recovery)"
        elif not outcomes:
            note = "no writes in this run"
        return RpoResult(0.0, 0, None, None, note=note)
    lost = [(t, k) for t, k in acks if k not in present]
    survived = [t for t, k in acks if k in present]
    if not lost:
        note = "" if before else "no acknowledged write before the fault"
        return RpoResult(0.0, 0, last_before, max(survived), acknowledged=len(acks), note=note)
    first_lost, last_lost = lost[0][0], lost[-1][0]
    anchor_candidates = [t for t in survived if t <= last_lost]
    lost_before = sum(1 for t, _ in lost if t <= fault_t)
    lost_after = len(lost) - lost_before
    notes = []
    if anchor_candidates:
        anchor, lower = anchor_candidates[-1], False
    else:
        anchor, lower = acks[0][0], True
        notes.append("no acknowledged write survived before the newest lost one: RPO is a lower bound "
                     "measured from the first acknowledged write")
    if lost_after:
        notes.append(f"{lost_after} acknowledged write(s) after the fault were lost")
    return RpoResult(
        rpo_s=max(0.0, last_lost - anchor), lost=len(lost), last_ack_before_fault_t=last_before,
        last_surviving_ack_t=anchor_candidates[-1] if anchor_candidates else None,
        first_lost_ack_t=first_lost, last_lost_ack_t=last_lost, lost_before_fault=lost_before,
        lost_after_fault=lost_after, acknowledged=len(acks), lower_bound=lower, note="; ".join(notes))


# --- RTO ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """A named moment of the recovery, as an offset from the fault."""

    name: str
    t: float
    offset_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "t": iso(self.t), "offset_s": _round(self.offset_s)}


@dataclass(frozen=True)
class RtoResult:
    """Measured recovery time of one service (see `rto` for the definition).

    `outage_observed` is False when no probe of the service failed after the fault: the service never
    went down, rto_s is 0.0 and `note` says so. rto_s None means it went down and never recovered
    (or, with probes == 0, that nothing was measured).
    """

    service: str
    rto_s: float | None
    first_success_t: float | None
    phases: tuple[Phase, ...] = ()
    consecutive: int = 1
    probes: int = 0
    failures: int = 0
    first_failure_t: float | None = None
    last_probe_t: float | None = None
    fault_t: float | None = None
    outage_observed: bool = True
    note: str = ""

    @property
    def recovered(self) -> bool:
        return self.rto_s is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service, "rto_s": _round(self.rto_s), "first_success_t": _iso(self.first_success_t),
            "phases": [p.to_dict() for p in self.phases], "consecutive": self.consecutive,
            "probes": self.probes, "failures": self.failures, "first_failure_t": _iso(self.first_failure_t),
            "last_probe_t": _iso(self.last_probe_t), "outage_observed": self.outage_observed, "note": self.note,
        }


def _probe_ok(e: Event) -> bool:
    return bool(e.data.get("ok"))


def rto(events: Iterable[Event], fault_t: float, service: str, consecutive: int = 3) -> RtoResult:
    """RTO of `service`: fault time to the start of the first streak of `consecutive` successful probes
    in a row that begins after the first failed probe after the fault.

    Successes before the first failure are ignored: in the first moments after the fault the
    not-yet-dead primary (or a connection still open to it) may answer, and counting those would give
    an RTO of about 0 for a service that then went down. When no probe failed after the fault the
    service never went down: rto_s is 0.0, `outage_observed` False and a note says so. rto_s is None
    when the service went down and never showed the streak, or when it was not probed after the fault.

    `events` are timeline events; probes are kind "probe" with data {"service", "ok", ...}, phases
    come from kind "failover" events after the fault (first occurrence of each event name; an event
    whose data names another service is ignored).
    """
    if consecutive < 1:
        raise ValueError(f"consecutive must be >= 1, got {consecutive!r}")
    evs = sorted(events, key=lambda e: e.t)
    probes = [e for e in evs if e.kind == "probe" and e.data.get("service") == service and e.t >= fault_t]
    first_failure: float | None = None
    first_success: float | None = None
    streak_start: float | None = None
    streak = 0
    failures = 0
    for p in probes:
        if not _probe_ok(p):
            failures += 1
            if first_failure is None:
                first_failure = p.t
            streak = 0
            continue
        if first_failure is None:
            continue  # still up (or answered by the dying primary): not a recovery
        if streak == 0:
            streak_start = p.t
        streak += 1
        if streak >= consecutive:
            first_success = streak_start
            break
    outage = first_failure is not None
    note = ""
    if not probes:
        note = "no probe of the service after the fault: RTO not measured"
    elif not outage:
        note = (f"no probe failed after the fault ({len(probes)} probes): the service never went down, "
                "RTO 0")
    phases: list[Phase] = []
    seen: set[str] = set()
    for e in evs:
        if e.kind != "failover" or e.t < fault_t or e.event in seen:
            continue
        svc = e.data.get("service")
        if svc is not None and svc != service:
            continue
        seen.add(e.event)
        phases.append(Phase(e.event, e.t, e.t - fault_t))
    if first_failure is not None:
        phases.append(Phase("outage_observed", first_failure, first_failure - fault_t))
    if first_success is not None:
        phases.append(Phase("first_success", first_success, first_success - fault_t))
    phases.sort(key=lambda p: (p.t, p.name))
    if not outage and probes:
        rto_s: float | None = 0.0
    else:
        rto_s = None if first_success is None else first_success - fault_t
    return RtoResult(
        service=service, rto_s=rto_s, first_success_t=first_success, phases=tuple(phases), consecutive=consecutive,
        probes=len(probes), failures=failures, first_failure_t=first_failure,
        last_probe_t=probes[-1].t if probes else None, fault_t=fault_t, outage_observed=outage, note=note)


# --- objectives ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectiveResult:
    """One service's measured RTO/RPO against its targets (a report.json `objectives` entry).

    `measured` is False for a catalog service the run did not measure (met is then False).
    `rpo_basis` says what the RPO was measured on (e.g. "vouchers", "stateless", "not_measured").
    """

    service: str
    priority: str
    rto_target_s: float
    rto_measured_s: float | None
    rpo_target_s: float
    rpo_measured_s: float | None
    met: bool
    rto_met: bool = True
    rpo_met: bool = True
    lost: int = 0
    reason: str = ""
    rpo_basis: str = ""
    measured: bool = True
    outage_observed: bool | None = None
    note: str = ""
    #: where the targets come from: the service's own, its priority class's, the customer tier's (None: no tier)
    targets: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service, "priority": self.priority, "targets": dict(self.targets or {}),
            "rto_target_s": self.rto_target_s, "rto_measured_s": _round(self.rto_measured_s),
            "rpo_target_s": self.rpo_target_s, "rpo_measured_s": _round(self.rpo_measured_s),
            "met": self.met, "rto_met": self.rto_met, "rpo_met": self.rpo_met, "lost": self.lost,
            "reason": self.reason, "rpo_basis": self.rpo_basis, "measured": self.measured,
            "outage_observed": self.outage_observed, "note": self.note,
        }


def _rpo_for(rpo_: RpoResult | Mapping[str, RpoResult | None] | None, service: str) -> RpoResult | None:
    if rpo_ is None or isinstance(rpo_, RpoResult):
        return rpo_
    return rpo_.get(service)


def service_targets(plan: Plan, service: str, tier: str | None = None) -> dict[str, Any]:
    """A service's RTO/RPO targets: the tightest of its own (catalog), its priority class's (P1 4h/1h, P2 8h/4h,
    P3 24h/24h) and, when given, the customer tier's (platinum 1h/15m, gold 4h/1h, silver 8h/4h), with each source."""
    svc = plan.service(service)
    sources: list[tuple[str, float, float]] = [("service", svc.rto_s, svc.rpo_s)]
    try:
        p = plan.priority(svc.priority)
        sources.append((f"priority {p.name}", p.rto_s, p.rpo_s))
    except PlanError:
        p = None
    t = plan.tier(tier) if tier else None
    if t is not None:
        sources.append((f"tier {t.name}", t.rto_s, t.rpo_s))
    rto_src = min(sources, key=lambda x: x[1])
    rpo_src = min(sources, key=lambda x: x[2])
    return {"rto_target_s": rto_src[1], "rpo_target_s": rpo_src[2], "rto_from": rto_src[0], "rpo_from": rpo_src[0],
            "service_rto_s": svc.rto_s, "service_rpo_s": svc.rpo_s,
            "priority_rto_s": p.rto_s if p else None, "priority_rpo_s": p.rpo_s if p else None,
            "tier": t.name if t else None, "tier_rto_s": t.rto_s if t else None, "tier_rpo_s": t.rpo_s if t else None}


def objective_results(plan: Plan, rtos: Iterable[RtoResult],
                      rpo: RpoResult | Mapping[str, RpoResult | None] | None = None,
                      tier: str | None = None, *, catalog: Iterable[str] | None = None,
                      rpo_basis: Mapping[str, str] | None = None,
                      notes: Mapping[str, str] | None = None) -> list[ObjectiveResult]:
    """Judge each measured service against its catalog objectives (tightened by `tier` when given).

    `rpo` is one RpoResult applying to every service, or a mapping service -> RpoResult; a service
    without one is judged on RTO only (`rpo_basis` says why: e.g. "stateless"). A service that went
    down and never recovered misses its objective. RPO is met when rpo_s <= target and, for a zero
    target, nothing acknowledged was lost; a lower-bound RPO (every acknowledged write lost) always
    misses. `catalog` names services that must appear even unmeasured (finalize passes the whole plan
    catalog): one without an RTO measurement (not probed, or no probe after the fault) gets
    met=False, measured=False and reason NOT_MEASURED. `notes` adds a per-service note (e.g. why its
    RPO was not measured). Results come in the plan's recovery order.
    """
    by_service = {r.service: r for r in rtos}
    t = plan.tier(tier) if tier else None
    known = {x.name for x in plan.services}
    out: list[ObjectiveResult] = []
    unknown = [s for s in by_service if s not in known]
    if unknown:
        raise PlanError(f"RTO measured for unknown service {unknown[0]!r}")
    required = set(catalog or ())
    unknown = sorted(required - known)
    if unknown:
        raise PlanError(f"catalog names unknown service {unknown[0]!r}")
    basis_of = dict(rpo_basis or {})
    notes = dict(notes or {})
    for name in plan.recovery_order:
        if name not in by_service and name not in required:
            continue
        svc = plan.service(name)
        targets = service_targets(plan, name, tier)
        rto_target, rpo_target = targets["rto_target_s"], targets["rpo_target_s"]
        r = by_service.get(name)
        rp = _rpo_for(rpo, name)
        basis = basis_of.get(name) or ("measured" if rp is not None else "not_measured")
        note_parts = [x for x in ((r.note if r is not None else ""), notes.get(name, "")) if x]
        if r is None or r.probes == 0:
            why = NOT_MEASURED if r is None else f"{NOT_MEASURED}: no probe of the service after the fault"
            out.append(ObjectiveResult(
                service=name, priority=svc.priority, rto_target_s=rto_target, rto_measured_s=None,
                rpo_target_s=rpo_target, rpo_measured_s=rp.rpo_s if rp is not None else None, met=False,
                rto_met=False, rpo_met=(basis == "stateless") if rp is None else
                (not rp.lower_bound and rp.rpo_s <= rpo_target and not (rpo_target == 0 and rp.lost)),
                lost=rp.lost if rp is not None else 0, reason=why, rpo_basis=basis, measured=False,
                note="; ".join(note_parts), targets=targets))
            continue
        reasons = []
        if r.rto_s is None:
            rto_met = False
            span = ""
            if r.last_probe_t is not None and r.fault_t is not None:
                span = f" over {format_duration(r.last_probe_t - r.fault_t)}"
            reasons.append(f"never recovered: no {r.consecutive} consecutive successful probes after the outage"
                           f" ({r.probes} probes{span}, {r.failures} failed)")
        else:
            rto_met = r.rto_s <= rto_target
            if not rto_met:
                reasons.append(f"RTO {format_duration(r.rto_s)} exceeds target {format_duration(rto_target)}")
        rpo_met = True
        lost = 0
        if rp is not None:
            lost = rp.lost
            if rp.lower_bound:
                rpo_met = False
                reasons.append(f"every acknowledged write up to the newest lost one was lost ({rp.lost} lost): "
                               f"RPO at least {format_duration(rp.rpo_s)}, real recovery point unknown")
            elif rp.rpo_s > rpo_target:
                rpo_met = False
                reasons.append(f"RPO {format_duration(rp.rpo_s)} exceeds target {format_duration(rpo_target)} "
                               f"({rp.lost} acknowledged writes lost)")
            elif rpo_target == 0 and rp.lost:
                rpo_met = False
                reasons.append(f"{rp.lost} acknowledged writes lost; the target allows no data loss")
        out.append(ObjectiveResult(
            service=name, priority=svc.priority, rto_target_s=rto_target, rto_measured_s=r.rto_s,
            rpo_target_s=rpo_target, rpo_measured_s=rp.rpo_s if rp is not None else None,
            met=rto_met and rpo_met, rto_met=rto_met, rpo_met=rpo_met, lost=lost, reason="; ".join(reasons),
            rpo_basis=basis, measured=True, outage_observed=r.outage_observed, note="; ".join(note_parts),
            targets=targets))
    return out


def unexpired(ops: Iterable[Op], at_t: float, f: str) -> tuple[list[Op], list[str]]:
    """`ops` without the f-ops of keys whose acknowledged record had expired by `at_t` (the final read).

    A record acknowledged with `value.expires_in` seconds (e.g. a Redis session's TTL) that expired
    before the final read cannot be told apart from a lost one, so it is not judged at all. Returns
    (kept ops, expired keys).
    """
    ops = list(ops)
    expired: set[str] = set()
    for op in ops:
        if op.f != f or op.type != "ok":
            continue
        ttl = op.value.get("expires_in") if isinstance(op.value, Mapping) else None
        if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and op.t + float(ttl) <= at_t:
            expired.add(op.key)
    if not expired:
        return ops, []
    return [op for op in ops if not (op.f == f and op.key in expired)], sorted(expired)


def unrevoked(ops: Iterable[Op], kids: Iterable[str], f: str = "session") -> tuple[list[Op], list[str]]:
    """`ops` without the f-ops of records issued under a revoked signing key (`value.kid` in `kids`).

    A key rotation after a compromise removes those sessions on purpose: they are the drill's revocation, judged
    by its own checks, not losses of the service. Returns (kept ops, revoked keys).
    """
    ops = list(ops)
    kids = set(kids)
    revoked = {op.key for op in ops if op.f == f and op.type == "ok" and isinstance(op.value, Mapping)
               and op.value.get("kid") in kids} if kids else set()
    if not revoked:
        return ops, []
    return [op for op in ops if not (op.f == f and op.key in revoked)], sorted(revoked)


# --- latency ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyStats:
    """Probe latency and errors of one service."""

    service: str
    count: int
    errors: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "count": self.count, "errors": self.errors,
                "p50_s": _round(self.p50_s, 4), "p95_s": _round(self.p95_s, 4), "max_s": _round(self.max_s, 4)}


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    xs = sorted(values)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q!r}")
    rank = max(1, math.ceil(q / 100 * len(xs)))
    return xs[rank - 1]


def latency_stats(events: Iterable[Event], since: float | None = None, until: float | None = None) -> dict[str, LatencyStats]:
    """p50/p95/max probe latency and error count per service (probes within [since, until] when given)."""
    lat: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}
    for e in events:
        if e.kind != "probe" or "service" not in e.data:
            continue
        if (since is not None and e.t < since) or (until is not None and e.t > until):
            continue
        s = str(e.data["service"])
        counts[s] = counts.get(s, 0) + 1
        if not e.data.get("ok"):
            errors[s] = errors.get(s, 0) + 1
        v = e.data.get("latency_s")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lat.setdefault(s, []).append(float(v))
    return {s: LatencyStats(s, counts[s], errors.get(s, 0), percentile(lat.get(s, []), 50),
                            percentile(lat.get(s, []), 95), max(lat[s]) if lat.get(s) else None)
            for s in sorted(counts)}
