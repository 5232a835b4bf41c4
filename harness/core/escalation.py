"""The escalation matrix on the drill clock (plan section 8.1) and the human decision time an approval gate adds to the RTO."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from harness.core.plan import EscalationLevel, Plan, PlanError

#: plan seconds -> drill seconds by default: the plan's 1 h is 36 s in the lab, 300 s is 3 s
DEFAULT_TIME_SCALE = 0.01

#: approval gate -> the authority (escalation matrix, section 8.1) that decides it
GATE_AUTHORITY = {
    "dr_region_switch": "decide DR activation",
    "data_restore_from_backup": "database failover",
    "database_point_in_time_recovery": "database failover",
}


def time_scale(value: Any) -> float:
    """The drill's time scale (drill seconds per plan second), in (0, 1]; PlanError naming the bad value."""
    if value is None:
        return DEFAULT_TIME_SCALE
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise PlanError(f"drill_time_scale {value!r} is not a number") from e
    if not 0 < v <= 1 or isinstance(value, bool):
        raise PlanError(f"drill_time_scale {value!r} is not in (0, 1]")
    return v


@dataclass(frozen=True)
class EscalationStep:
    """One call of the matrix: who, at which level, when (drill epoch) and how far into the incident (both clocks)."""

    level: int
    who: str
    t: float
    incident: int
    plan_offset_s: float
    drill_offset_s: float
    response_time_s: float
    authority: tuple[str, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "who": self.who, "t": self.t, "incident": self.incident,
                "plan_offset_s": round(self.plan_offset_s, 3), "drill_offset_s": round(self.drill_offset_s, 3),
                "response_time_s": self.response_time_s, "authority": list(self.authority), "reason": self.reason}


@dataclass
class EscalationClock:
    """Runs the matrix against the detector's level: an incident opens at the first level >= 1 (level 1 is called),
    each level that has not resolved it within its response time (plan time x scale on the drill clock) calls the
    next, and a level 0 closes the incident. `observe` returns the calls that became due."""

    levels: tuple[EscalationLevel, ...]
    scale: float = DEFAULT_TIME_SCALE
    opened_at: float | None = None
    incidents: int = 0
    called: list[EscalationStep] = field(default_factory=list)

    @classmethod
    def for_plan(cls, plan: Plan, scale: float = DEFAULT_TIME_SCALE) -> "EscalationClock":
        return cls(tuple(sorted(plan.escalation, key=lambda e: e.level)), scale)

    def _due(self) -> list[tuple[EscalationLevel, float]]:
        """(level, plan offset from the incident's start) of every call of the matrix."""
        out, offset = [], 0.0
        for lv in self.levels:
            out.append((lv, offset))
            offset += lv.response_time_s
        return out

    def observe(self, now: float, disaster_level: int | None) -> list[EscalationStep]:
        if disaster_level is None:
            return []
        if self.opened_at is None:
            if disaster_level < 1:
                return []
            self.opened_at, self.incidents = now, self.incidents + 1
        elif disaster_level < 1:
            self.opened_at = None
            return []
        new = []
        done = {s.level for s in self.called if s.incident == self.incidents}
        for i, (lv, plan_offset) in enumerate(self._due()):
            at = self.opened_at + plan_offset * self.scale
            if lv.level in done or at > now:
                continue
            prev = self.levels[i - 1] if i else None
            reason = (f"disaster level {disaster_level}: incident opened" if prev is None else
                      f"not resolved within {prev.name}'s response time")
            step = EscalationStep(lv.level, lv.name, at, self.incidents, plan_offset, plan_offset * self.scale,
                                  lv.response_time_s, tuple(lv.authority), reason)
            self.called.append(step)
            new.append(step)
        return new


def decision(plan: Plan, gate: str, scale: float = DEFAULT_TIME_SCALE) -> dict[str, Any]:
    """The human decision time an approval gate costs: the response time of the escalation level holding the
    gate's authority (dr_region_switch: the CTO's 1 h), on the plan's clock and the drill's."""
    authority = GATE_AUTHORITY.get(gate)
    level = next((lv for lv in sorted(plan.escalation, key=lambda e: e.level)
                  if authority and any(authority == a for a in lv.authority)), None)
    if level is None:
        raise PlanError(f"no escalation level of the plan holds the authority for gate {gate!r}")
    return {"gate": gate, "authority": authority, "level": level.level, "who": level.name,
            "plan_s": level.response_time_s, "drill_s": round(level.response_time_s * scale, 3), "time_scale": scale}


def rto_with_decisions(rtos: Iterable[tuple[str, float | None]], decisions: Iterable[dict[str, Any]],
                       scale: float) -> list[dict[str, Any]]:
    """Per service: the measured RTO, and the RTO with the decision time of every gate the run passed added, on the
    plan's clock (measured seconds + the plan's wait) and on the drill clock (+ the scaled wait)."""
    wait = sum(float(d["plan_s"]) for d in decisions)
    return [{"service": svc, "rto_s": rto, "decision_s": wait,
             "rto_with_decision_s": None if rto is None else round(rto + wait, 3),
             "rto_with_decision_drill_s": None if rto is None else round(rto + wait * scale, 3)}
            for svc, rto in rtos]
