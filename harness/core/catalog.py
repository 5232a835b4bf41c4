"""The disaster catalog's pure rules: tags (level, cadences, scenario or not), drawing, the level objective."""

# Tag rules (docs/CATALOG.md):
# - a scenario carries exactly one level tag `level1`..`level4` and any of the cadence tags `ci`, `monthly`,
#   `semiannual`, `annual`; a cadence draws only the levels of its profile (CADENCE_LEVELS);
# - a file tagged `composite` (several faults of different scenarios in one run) or `tabletop` (the tabletop
#   walk, injects nothing) is not a scenario: it carries no level and no cadence tag and is never drawn;
# - a tag that looks like a level but is not one of the four (`level-1`, `Level1`, `level5`) is an error.

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

LEVEL_TAGS: dict[str, int] = {f"level{n}": n for n in (1, 2, 3, 4)}
CADENCES: tuple[str, ...] = ("ci", "monthly", "semiannual", "annual")
#: the levels each cadence draws (the profile's share of the catalog)
CADENCE_LEVELS: dict[str, tuple[int, ...]] = {"ci": (3,), "monthly": (1, 2), "semiannual": (3, 4), "annual": (3, 4)}
#: tags of files that are not scenarios (never drawn by a cadence, carry no level)
NON_SCENARIO_TAGS: tuple[str, ...] = ("composite", "tabletop")
_LEVELISH = re.compile(r"^level[\W_]*\d+$", re.IGNORECASE)


@dataclass(frozen=True)
class Tags:
    """What a file's tags say in the catalog: its level (None for a non-scenario), cadences, kind, problems."""

    level: int | None
    cadences: tuple[str, ...]
    kind: str  # "scenario" | "composite" | "tabletop"
    problems: tuple[str, ...] = ()

    @property
    def scenario(self) -> bool:
        return self.kind == "scenario"


def read_tags(tags: Iterable[Any]) -> Tags:
    """The catalog meaning of a tag list (a feature's `@` prefixes are dropped); every rule broken is a problem."""
    names = [str(t).strip().lstrip("@") for t in tags if str(t).strip()]
    problems: list[str] = []
    levels = [LEVEL_TAGS[t] for t in names if t in LEVEL_TAGS]
    for t in names:
        if t not in LEVEL_TAGS and _LEVELISH.match(t):
            problems.append(f"unknown level tag {t!r} (the level tags are {', '.join(LEVEL_TAGS)})")
    cadences = tuple(c for c in CADENCES if c in names)
    kind = next((k for k in NON_SCENARIO_TAGS if k in names), "scenario")
    if kind != "scenario":
        extra = [t for t in names if t in LEVEL_TAGS or t in CADENCES]
        if extra:
            problems.append(f"a {kind} file is not a catalog scenario: it carries no level or cadence tag "
                            f"(found {', '.join(extra)})")
        return Tags(None, (), kind, tuple(problems))
    if not levels:
        problems.append(f"no level tag: a catalog scenario carries exactly one of {', '.join(LEVEL_TAGS)} "
                        f"(or tag it {' or '.join(NON_SCENARIO_TAGS)} if it is not a scenario)")
    elif len(set(levels)) > 1:
        problems.append(f"{len(set(levels))} level tags ({', '.join(f'level{n}' for n in sorted(set(levels)))}): "
                        f"a catalog scenario carries exactly one")
    level = levels[0] if len(set(levels)) == 1 else None
    if level is not None:
        for c in cadences:
            if level not in CADENCE_LEVELS[c]:
                problems.append(f"cadence {c!r} draws level(s) {', '.join(map(str, CADENCE_LEVELS[c]))} only, "
                                f"this scenario is level{level}")
    return Tags(level, cadences, kind, tuple(problems))


def carries_catalog_tags(tags: Iterable[Any]) -> bool:
    """True when any tag is (or looks like) a catalog tag: such a file is judged by the catalog's rules."""
    names = [str(t).strip().lstrip("@") for t in tags]
    return any(t in LEVEL_TAGS or t in CADENCES or t in NON_SCENARIO_TAGS or _LEVELISH.match(t) for t in names)


def draw(scenarios: Sequence[Any], *, levels: Iterable[int] | None, cadence: str | None) -> list[Any]:
    """The scenarios (objects with .id, .level, .cadences) a profile draws: its cadence tag and its levels (None:
    every level; cadence None: every cadence), in catalog order (level, then id)."""
    lv = set(levels) if levels is not None else None
    out = [s for s in scenarios
           if (lv is None or s.level in lv) and (cadence is None or cadence in s.cadences)]
    out.sort(key=lambda s: (s.level or 0, s.id))
    return out


@dataclass(frozen=True)
class LevelObjective:
    """The scenario's level as an objective: the plan's expected downtime of the level, scaled to the drill clock,
    against the measured downtime (the longest time any catalog service did not answer, its RTO)."""

    level: int
    name: str
    expected_downtime_s: float  # the plan's, on the plan's clock
    time_scale: float
    objective_s: float  # on the drill clock
    measured_downtime_s: float | None
    worst_service: str | None
    measured: bool
    met: bool
    note: str = ""
    services: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "name": self.name, "expected_downtime_s": self.expected_downtime_s,
                "time_scale": self.time_scale, "objective_s": self.objective_s,
                "measured_downtime_s": self.measured_downtime_s, "worst_service": self.worst_service,
                "measured": self.measured, "met": self.met, "note": self.note,
                "downtime_by_service": dict(self.services)}


def level_objective(level: int, name: str, expected_downtime_s: float, time_scale: float,
                    rtos: Mapping[str, tuple[float | None, int]]) -> LevelObjective:
    """Judge the measured downtime against the level's expected downtime on the drill clock.

    `rtos`: service -> (its downtime in seconds: the longest outage after the fault, 0 when it never went down,
    None when an outage never ended; probes of it after the fault). The downtime is the worst service's. A service
    that went down and never came back makes the downtime unbounded: missed. No probed service after the fault:
    not measured, not met.
    """
    if not 0 < time_scale <= 1:
        raise ValueError(f"time scale {time_scale!r} is not in (0, 1]")
    objective = round(expected_downtime_s * time_scale, 3)
    probed = {svc: v for svc, (v, probes) in rtos.items() if probes > 0}
    base = dict(level=level, name=name, expected_downtime_s=expected_downtime_s, time_scale=time_scale,
                objective_s=objective, services=dict(probed))
    if not probed:
        return LevelObjective(**base, measured_downtime_s=None, worst_service=None, measured=False, met=False,
                              note="no catalog service was probed after the fault: downtime not measured")
    never = sorted(svc for svc, v in probed.items() if v is None)
    if never:
        return LevelObjective(**base, measured_downtime_s=None, worst_service=never[0], measured=True, met=False,
                              note=f"never answered again before the end of the run: {', '.join(never)}")
    worst = max(sorted(probed), key=lambda svc: probed[svc])
    down = round(float(probed[worst]), 3)
    met = down <= objective
    note = (f"{worst} did not answer for {down} s, level {level} ({name}) allows {objective} s on the drill clock "
            f"({expected_downtime_s:.0f} s x {time_scale})")
    return LevelObjective(**base, measured_downtime_s=down, worst_service=worst, measured=True, met=met, note=note)


def configuration_problems(tags: Tags, configuration: Mapping[str, Any]) -> list[str]:
    """The experiment configuration's catalog keys against its tags: `drill_level` names the tag's level."""
    v = configuration.get("drill_level")
    if v is None:
        return []
    if isinstance(v, bool) or not isinstance(v, int) or v not in LEVEL_TAGS.values():
        return [f"configuration.drill_level: must be a level 1..4, got {v!r:.40}"]
    if not tags.scenario:
        return [f"configuration.drill_level {v}: a {tags.kind} file is not a catalog scenario"]
    if tags.level is not None and v != tags.level:
        return [f"configuration.drill_level {v} differs from the level tag level{tags.level}"]
    return []
