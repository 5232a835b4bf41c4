"""The escalation matrix on the drill clock (plan section 8.1) and the human decision time an approval gate adds to the RTO."""

from __future__ import annotations

import re
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


_WITHIN = re.compile(r"within\s+(\d+)\s*(minute|min|hour|h)", re.I)


def escalate_after_s(level: EscalationLevel) -> float | None:
    """Plan seconds after which an incident this level has not resolved goes to the next level: the plan's trigger
    "not resolved within N minutes/hours" (counted from the incident's start); None when no trigger names a time."""
    for text in level.triggers:
        m = _WITHIN.search(str(text))
        if m:
            return int(m.group(1)) * (3600 if m.group(2).lower().startswith("h") else 60)
    return None


@dataclass(frozen=True)
class Call:
    """When a level of the matrix is called, in plan seconds from the incident's start, and why."""

    level: EscalationLevel
    offset_s: float
    timed: bool  # False: the previous level's triggers name no time ("major outage persists", "SLA violation")
    reason: str


def schedule(levels: Iterable[EscalationLevel]) -> list[Call]:
    """The one reading of the escalation matrix (the drill clock and the report's notifications both use it).

    Level 1 is called when the incident opens. The next level is called when the incident is still unresolved at
    the current level's trigger time ("not resolved within 30 minutes": 30 min from the start). When the current
    level's triggers name no time (the outage persists, an SLA violation), the next level is called once the
    current one has had its response time and the incident is still open (or, after the fact, when an objective
    was missed)."""
    out: list[Call] = []
    for lv in sorted(levels, key=lambda e: e.level):
        if not out:
            out.append(Call(lv, 0.0, True, "incident opened"))
            continue
        prev = out[-1]
        after = escalate_after_s(prev.level)
        if after is not None and after > prev.offset_s:
            out.append(Call(lv, float(after), True, f"not resolved within {prev.level.name}'s {_hm(after)}"))
        else:
            out.append(Call(lv, prev.offset_s + prev.level.response_time_s, False,
                            f"outage persists after {prev.level.name}'s response time"))
    return out


def _hm(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 and seconds % 3600 == 0 else f"{seconds / 60:g} min"


def level_downtime(plan: Plan, level: Any, scale: Any = None) -> tuple[Any, float, float]:
    """(the plan's disaster level `level`, the time scale, the level's expected downtime on the drill clock): the
    one place the level objective is scaled. PlanError names an unknown level or a bad scale."""
    try:
        lvl = plan.disaster_level(int(level))
    except (TypeError, ValueError) as e:
        raise PlanError(f"disaster level {level!r} is not a number") from e
    s = time_scale(scale)
    return lvl, s, lvl.expected_downtime_s * s


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
    each next level is called at its `schedule` offset (plan time x scale on the drill clock) while the incident is
    open, and a level 0 closes the incident. `observe` returns the calls that became due."""

    levels: tuple[EscalationLevel, ...]
    scale: float = DEFAULT_TIME_SCALE
    opened_at: float | None = None
    incidents: int = 0
    called: list[EscalationStep] = field(default_factory=list)

    @classmethod
    def for_plan(cls, plan: Plan, scale: float = DEFAULT_TIME_SCALE) -> "EscalationClock":
        return cls(tuple(sorted(plan.escalation, key=lambda e: e.level)), scale)

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
        for call in schedule(self.levels):
            lv = call.level
            at = self.opened_at + call.offset_s * self.scale
            if lv.level in done or at > now:
                continue
            reason = f"disaster level {disaster_level}: {call.reason}"
            step = EscalationStep(lv.level, lv.name, at, self.incidents, call.offset_s, call.offset_s * self.scale,
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
