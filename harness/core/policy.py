"""The failover policy (plan section 3.3) as a pure state machine: conditions held over time on the drill clock, cooldowns, decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from harness.core.durations import format_duration
from harness.core.plan import Plan, PlanError
from harness.core.safety import Activation, SafetyContext, cooldown_remaining
from harness.core.timeline import iso

FIRED, NOT_FIRED, REFUSED = "fired", "not_fired", "refused"
#: condition types whose threshold is a time (scaled with the drill clock, like the durations)
TIME_THRESHOLDS = ("replication_lag",)
#: condition types that are a failing state (no threshold: failing or not)
STATES = ("connection_failure", "api_server_unreachable")


@dataclass(frozen=True)
class Rule:
    """One failover condition of the plan, with the thresholds the drill applies (time scale, lab overrides)."""

    name: str
    component: str
    type: str
    action: str
    threshold: float | None  # as the plan gives it: seconds, a ratio, a count (None: a failing state)
    duration_s: float  # the plan's (0: act at once)
    drill_threshold: float | None
    drill_duration_s: float
    unit: str

    def breached(self, value: Any) -> bool:
        if value is None:
            return False
        if self.type in STATES:
            return bool(value)
        return float(value) >= float(self.drill_threshold) if self.type == "node_not_ready" else \
            float(value) > float(self.drill_threshold)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "component": self.component, "type": self.type, "action": self.action,
                "threshold": self.threshold, "drill_threshold": self.drill_threshold, "duration_s": self.duration_s,
                "drill_duration_s": self.drill_duration_s, "unit": self.unit}


def rules(plan: Plan, scale: float, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Rule, ...]:
    """The plan's failover conditions as rules. Durations and time thresholds (replication lag) run on the drill clock
    (x `scale`); `overrides` {rule: {"threshold": value}} replace a drill threshold the lab cannot reach as such
    (e.g. p99 latency: the lab's clients time out long before 5 s), and the report shows both."""
    out: list[Rule] = []
    names: dict[str, int] = {}
    for c in plan.failover_conditions:
        base = f"{c.type}_{c.action}" if c.type == "replication_lag" else c.type
        names[base] = names.get(base, 0) + 1
        name = base if names[base] == 1 else f"{base}_{names[base]}"
        if c.type in STATES:
            threshold, unit = None, "failing"
        elif c.count is not None:
            threshold, unit = float(c.count), "count"
        elif c.threshold_ratio is not None:
            threshold, unit = float(c.threshold_ratio), "ratio"
        else:
            threshold, unit = c.threshold_s, "s"
        drill_threshold = threshold * scale if (threshold is not None and c.type in TIME_THRESHOLDS) else threshold
        o = dict((overrides or {}).get(name) or {})
        if "threshold" in o:
            if threshold is None:
                raise PlanError(f"failover rule {name!r} has no threshold to override")
            drill_threshold = float(o["threshold"])
        out.append(Rule(name, c.component, c.type, c.action, threshold, float(c.duration_s or 0.0),
                        drill_threshold, float(c.duration_s or 0.0) * scale, unit))
    unknown = set(overrides or {}) - {r.name for r in out}
    if unknown:
        raise PlanError(f"unknown failover rule {sorted(unknown)[0]!r} (known: {', '.join(r.name for r in out)})")
    return tuple(out)


@dataclass(frozen=True)
class PolicyDecision:
    """A decision of the policy engine: the rule, what was measured against which threshold for how long, the action
    and its outcome (fired, not_fired: the condition recovered before its duration, refused: cooldown or gate)."""

    t: float
    rule: str
    measured: Any
    threshold: float | None
    duration_s: float
    drill_duration_s: float
    held_s: float
    action: str
    outcome: str
    reason: str = ""
    clears_at: float | None = None
    peak: Any = None

    def to_dict(self) -> dict[str, Any]:
        d = {"t": self.t, "rule": self.rule, "measured": _round(self.measured), "peak": _round(self.peak),
             "threshold": self.threshold, "duration_s": self.duration_s, "drill_duration_s": round(self.drill_duration_s, 3),
             "held_s": round(self.held_s, 3), "action": self.action, "outcome": self.outcome, "reason": self.reason}
        if self.clears_at is not None:
            d["clears_at"] = iso(self.clears_at)
        return d


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


@dataclass
class _State:
    since: float | None = None
    last: float | None = None  # the last observation that found the condition breached
    fired: bool = False
    peak: Any = None


@dataclass
class PolicyEngine:
    """Evaluates every rule at each observation of the measured signals ({type: value}); a rule fires when its
    condition has held for its drill duration, once per breach; a breach that ends before that is a not_fired
    decision. Actions under a cooldown (the plan's, x scale) fired before are refused with the time it clears."""

    rules: tuple[Rule, ...]
    cooldowns: Mapping[str, float] = field(default_factory=dict)  # cooldown name -> plan seconds
    cooldown_actions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # action -> cooldown names
    scale: float = 1.0
    history: list[Activation] = field(default_factory=list)
    _state: dict[str, _State] = field(default_factory=dict)

    @classmethod
    def for_plan(cls, plan: Plan, scale: float, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> "PolicyEngine":
        return cls(rules(plan, scale, overrides), {c.name: c.duration_s for c in plan.cooldowns},
                   {r.action: plan.cooldowns_for(r.action) for r in rules(plan, scale, overrides)}, scale)

    def observe(self, now: float, signals: Mapping[str, Any]) -> list[PolicyDecision]:
        """Decisions that became due at `now` (fired / refused to be acted upon by the caller, not_fired to record)."""
        out: list[PolicyDecision] = []
        for r in self.rules:
            st = self._state.setdefault(r.name, _State())
            if r.type not in signals:
                continue
            value = signals[r.type]
            if r.breached(value):
                if st.since is None:
                    st.since, st.fired, st.peak = now, False, value
                elif value is not None and not isinstance(value, bool) and (st.peak is None or value > st.peak):
                    st.peak = value
                st.last = now
                held = now - st.since
                if not st.fired and held >= r.drill_duration_s:
                    st.fired = True
                    out.append(self._fire(r, now, value, held, st.peak))
            else:
                if st.since is not None and not st.fired:
                    held = (st.last or st.since) - st.since
                    out.append(PolicyDecision(now, r.name, value, r.drill_threshold, r.duration_s, r.drill_duration_s,
                                              held, r.action, NOT_FIRED,
                                              f"held {format_duration(held)}, recovered before its duration "
                                              f"{format_duration(r.drill_duration_s)} (plan {format_duration(r.duration_s)})",
                                              peak=st.peak))
                st.since, st.fired, st.peak = None, False, None
        return out

    def _fire(self, r: Rule, now: float, value: Any, held: float, peak: Any) -> PolicyDecision:
        ctx = SafetyContext(now=now, cooldowns={k: v * self.scale for k, v in self.cooldowns.items()},
                            history=tuple(self.history), enforce_cooldowns=True)
        for name in self.cooldown_actions.get(r.action, ()):
            left, last = cooldown_remaining(name, ctx)
            if left > 0 and last is not None:
                clears = last.t + ctx.cooldowns[name]
                return PolicyDecision(now, r.name, value, r.drill_threshold, r.duration_s, r.drill_duration_s, held,
                                      r.action, REFUSED,
                                      f"cooldown {name} ({format_duration(self.cooldowns[name])}, "
                                      f"{format_duration(ctx.cooldowns[name])} on the drill clock): last {last.source} "
                                      f"{format_duration(now - last.t)} ago, clears in {format_duration(left)} "
                                      f"(at {iso(clears)})", clears_at=clears, peak=peak)
        return PolicyDecision(now, r.name, value, r.drill_threshold, r.duration_s, r.drill_duration_s, held, r.action,
                              FIRED, f"held {format_duration(held)} >= {format_duration(r.drill_duration_s)}", peak=peak)

    def acted(self, decision: PolicyDecision) -> None:
        """Record that a fired decision's action was carried out (its cooldowns start now)."""
        for name in self.cooldown_actions.get(decision.action, ()):
            self.history.append(Activation(name, decision.t, source=f"{decision.action} ({decision.rule})"))

    def finish(self, now: float) -> list[PolicyDecision]:
        """At the end of the run: a condition still held but not yet for its duration is a not_fired decision."""
        out = []
        for r in self.rules:
            st = self._state.get(r.name)
            if st is not None and st.since is not None and not st.fired:
                held = (st.last or st.since) - st.since
                out.append(PolicyDecision(now, r.name, st.peak, r.drill_threshold, r.duration_s, r.drill_duration_s,
                                          held, r.action, NOT_FIRED, f"still held after {format_duration(held)} when the "
                                          f"run ended, below its duration {format_duration(r.drill_duration_s)}",
                                          peak=st.peak))
                st.since = None
        return out


def summarize(decisions: Iterable[Mapping[str, Any]], rules_: Iterable[Rule]) -> dict[str, Any]:
    """Counts for the report: rules fired, not fired, refused, never breached."""
    ds = list(decisions)
    by = {o: sorted({d["rule"] for d in ds if d["outcome"] == o}) for o in (FIRED, NOT_FIRED, REFUSED)}
    seen = {d["rule"] for d in ds}
    return {**by, "never_breached": [r.name for r in rules_ if r.name not in seen]}
