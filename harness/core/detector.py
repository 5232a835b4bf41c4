"""The disaster-level detector over a run: samples, level over time, maximum, expected level of the scenario, mismatch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from harness.core.plan import Plan, PlanError
from harness.core.safety import LevelDecision, plan_disaster_level


@dataclass(frozen=True)
class IndicatorSample:
    """One indicator at one sample: healthy True/False (None: could not be evaluated), its weight, what was seen."""

    name: str
    healthy: bool | None
    weight: int
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "weight": self.weight, "value": _value(self.healthy), "detail": self.detail}


@dataclass(frozen=True)
class LevelSample:
    """One detector sample: when, the region judged (the active one), each indicator and the level they add up to."""

    t: float
    region: str
    level: int
    name: str
    failed_weight: int
    indicators: tuple[IndicatorSample, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "region": self.region, "level": self.level, "name": self.name,
                "failed_weight": self.failed_weight,
                "indicators": {i.name: i.to_dict() for i in self.indicators}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LevelSample":
        inds = tuple(IndicatorSample(str(k), v.get("healthy"), int(v.get("weight") or 0), str(v.get("detail") or ""))
                     for k, v in (d.get("indicators") or {}).items() if isinstance(v, Mapping))
        return cls(float(d["t"]), str(d.get("region") or ""), int(d["level"]), str(d.get("name") or ""),
                   int(d.get("failed_weight") or 0), inds)


def _value(healthy: bool | None) -> float:
    """The gauge value of an indicator: 1 healthy, 0 failed, NaN unknown."""
    return float("nan") if healthy is None else (1.0 if healthy else 0.0)


def sample(plan: Plan, t: float, region: str, states: Mapping[str, tuple[bool | None, str]]) -> LevelSample:
    """A sample from indicator states {name: (healthy, detail)}; names the plan does not define are ignored."""
    weights = {i.name: i.weight for i in plan.indicators}
    known = {k: v for k, v in states.items() if k in weights}
    d: LevelDecision = plan_disaster_level(plan, {k: v[0] for k, v in known.items()})
    inds = tuple(IndicatorSample(n, known[n][0] if n in known else None, weights[n], known[n][1] if n in known else "")
                 for n in weights)
    return LevelSample(t, region, d.level, d.name, d.failed_weight, inds)


def expected_level(plan: Plan, declared: Any) -> tuple[int | None, str]:
    """(level, why) of a scenario's declared expectation: an integer 0..4, or one of the plan's disaster-level
    examples ("region failure" -> 3, "single pod failure" -> 1). None declared: (None, ""). PlanError otherwise."""
    if declared is None or declared == "":
        return None, ""
    if isinstance(declared, bool):
        raise PlanError(f"drill_expected_level {declared!r} is not a level (0..4) or a disaster-level example")
    levels = {lv.level: lv for lv in plan.disaster_levels}
    if isinstance(declared, int) or (isinstance(declared, str) and declared.strip().isdigit()):
        n = int(declared)
        if n == 0:
            return 0, "declared: level 0 (normal)"
        if n not in levels:
            raise PlanError(f"drill_expected_level {declared!r} is not a level of the plan (0..{max(levels, default=0)})")
        return n, f"declared: level {n} ({levels[n].name})"
    if isinstance(declared, str):
        want = declared.strip().lower()
        for lv in sorted(levels.values(), key=lambda x: x.level):
            if any(want == ex.lower() for ex in lv.examples):
                return lv.level, f"the plan's level {lv.level} ({lv.name}) for {declared!r}"
        examples = sorted(ex for lv in levels.values() for ex in lv.examples)
        raise PlanError(f"drill_expected_level {declared!r} is not a disaster-level example of the plan "
                        f"(one of: {', '.join(examples)})")
    raise PlanError(f"drill_expected_level {declared!r} is not a level (0..4) or a disaster-level example")


def level_series(samples: Iterable[LevelSample]) -> list[tuple[float, int]]:
    """(t, level) at every change of level, in time order (the first sample always)."""
    out: list[tuple[float, int]] = []
    for s in sorted(samples, key=lambda x: x.t):
        if not out or out[-1][1] != s.level:
            out.append((s.t, s.level))
    return out


def summarize(plan: Plan, samples: Iterable[LevelSample], expected: int | None, expected_why: str = "",
              fault_t: float | None = None) -> dict[str, Any]:
    """report.json `detector`: max level, expected level, whether they match, the level over time and the samples.

    The expected level is the scenario's disaster level; the detector matches it when the highest level it
    sampled equals it. No sample: max_level None and match None (nothing to compare)."""
    ss = sorted(samples, key=lambda x: x.t)
    max_level = max((s.level for s in ss), default=None)
    peak = max(ss, key=lambda s: (s.level, s.failed_weight), default=None)
    match = None if (max_level is None or expected is None) else max_level == expected
    names = {lv.level: lv.name for lv in plan.disaster_levels}
    doc: dict[str, Any] = {
        "max_level": max_level, "max_level_name": names.get(max_level, "normal") if max_level is not None else None,
        "expected_level": expected, "expected_level_name": names.get(expected, "normal") if expected is not None else None,
        "expected_from": expected_why, "match": match,
        "peak": peak.to_dict() if peak is not None else None,
        "level_over_time": [{"t": t, "level": lv, "offset_s": round(t - fault_t, 3) if fault_t else None}
                            for t, lv in level_series(ss)],
        "samples": [s.to_dict() for s in ss],
    }
    if match is False:
        failed = [i.name for i in peak.indicators if i.healthy is False] if peak else []
        doc["note"] = (f"detector reached level {max_level} ({doc['max_level_name']}), the scenario's level is "
                       f"{expected} ({doc['expected_level_name']}): failed at the peak "
                       f"{', '.join(failed) or 'nothing'} (weight {peak.failed_weight if peak else 0})")
    elif max_level is None:
        doc["note"] = "the detector took no sample in this run"
    return doc
