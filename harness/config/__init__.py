"""Loads the DR plan (plan.yaml, optional overrides merged over it), validates it and builds `core.plan.Plan`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from harness.core import plan as P
from harness.core.durations import DurationError, parse_duration, parse_duration_range
from harness.errors import ConfigError

__all__ = ["DEFAULT_PLAN", "MAX_INPUT_BYTES", "load_plan", "load_plan_dict", "merge_overrides", "read_text",
           "read_yaml"]

DEFAULT_PLAN = Path(__file__).with_name("plan.yaml")

#: Keys holding durations; `<key>_s` is accepted as an alias (e.g. `rto_s: 0.001`).
DURATION_KEYS = frozenset({"rto", "rpo", "lag_target", "interval", "duration", "expected_downtime", "threshold",
                           "frequency", "retention", "response_time"})

#: Mappings whose keys are names of plan entities: overrides may change them, not add new ones.
_COLLECTIONS = {
    ("priorities",): "priority", ("tiers",): "tier", ("services",): "service",
    ("infrastructure",): "infrastructure component", ("regions",): "region", ("replication",): "replication entry",
    ("disaster_levels",): "disaster level", ("indicators",): "indicator", ("cooldowns",): "cooldown",
    ("gates",): "gate", ("backup_layers",): "backup layer", ("test_types",): "test type",
    ("procedure",): "procedure phase", ("escalation",): "escalation level", ("checklist",): "checklist phase",
}


# --- durations as pydantic types ---------------------------------------------------------------
def _seconds(v: Any) -> float:
    try:
        return parse_duration(v)
    except DurationError as e:
        raise ValueError(str(e)) from e


def _range(v: Any) -> tuple[float, float] | None:
    if isinstance(v, str) and v.strip().lower() in ("ongoing", "continuous", "open-ended"):
        return None
    try:
        return parse_duration_range(v)
    except DurationError as e:
        raise ValueError(str(e)) from e


def _threshold(v: Any) -> tuple[str, float]:
    """("ratio", 0.5) for "50%", else ("seconds", n)."""
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            pct = float(v.strip()[:-1])
        except ValueError:
            raise ValueError(f"invalid percentage {v!r}") from None
        if not 0 <= pct <= 100:
            raise ValueError(f"percentage {v!r} out of range 0-100%")
        return ("ratio", pct / 100.0)
    return ("seconds", _seconds(v))


Seconds = Annotated[float, BeforeValidator(_seconds)]
Range = Annotated[tuple[float, float] | None, BeforeValidator(_range)]
Threshold = Annotated[tuple[str, float], BeforeValidator(_threshold)]
Names = list[str]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GoalsM(_M):
    rto: Seconds
    rpo: Seconds
    availability: str
    compliance: Names = []


class PriorityM(_M):
    level: int = Field(ge=1)
    description: str = ""
    rto: Seconds
    rpo: Seconds
    functions: Names = []


class TierM(_M):
    description: str = ""
    availability: str
    rto: Seconds
    rpo: Seconds
    support: str = ""
    dr_mode: str


class ServiceM(_M):
    priority: str
    rto: Seconds
    rpo: Seconds
    dependencies: Names = []
    recovery_steps: Names = []
    description: str = ""


class ComponentM(_M):
    description: str = ""
    lab: str = ""


class RegionM(_M):
    role: str
    aws_region: str
    mode: str = ""
    description: str = ""


class ReplicationM(_M):
    type: str
    lag_target: Seconds


class HealthCheckM(_M):
    path: str
    interval: Seconds
    failure_threshold: int = Field(ge=1)


class LevelM(_M):
    name: str
    description: str = ""
    examples: Names = []
    response: str = ""
    expected_downtime: Seconds
    min_failed_weight: int = Field(ge=0)


class IndicatorM(_M):
    weight: int = Field(ge=0)
    description: str = ""


class ConditionM(_M):
    component: str
    type: str
    action: str
    threshold: Threshold | None = None
    duration: Seconds | None = None
    count: int | None = Field(default=None, ge=1)


class CooldownM(_M):
    duration: Seconds
    actions: Names = []


class GateM(_M):
    description: str = ""
    actions: Names = []


class BackupComponentM(_M):
    method: str = ""
    target: str = ""
    frequency: Seconds | None = None
    retention: Seconds | None = None
    storage: str = ""
    lag_target: Seconds | None = None
    compliance: str = ""
    kind: Literal["", "pg_dump", "pg_basebackup", "wal", "redis_rdb"] = ""
    prefix: str = ""


class BackupLayerM(_M):
    type: str
    components: dict[str, BackupComponentM] = {}


class TestTypeM(_M):
    frequency: str
    interval: Seconds
    duration: Range
    scope: str = ""
    participants: Names = []
    objectives: Names = []
    profile: str = ""


class ChecklistItemM(_M):
    id: str = Field(min_length=1)
    item: str
    expected: str
    command: str = ""
    threshold: Seconds | None = None
    layer: str = ""
    count: int | None = Field(default=None, ge=1)


class PhaseM(_M):
    title: str = ""
    duration: Range = None
    steps: Names = []


class EscalationM(_M):
    name: str
    response_time: Seconds
    authority: Names = []
    escalate_to: int | None = None
    triggers: Names = []


class PlanM(_M):
    name: str
    version: str = ""
    goals: GoalsM
    priorities: dict[str, PriorityM]
    tiers: dict[str, TierM] = {}
    services: dict[str, ServiceM]
    infrastructure: dict[str, ComponentM] = {}
    recovery_order: Names = []
    regions: dict[str, RegionM] = {}
    replication: dict[str, ReplicationM] = {}
    health_check: HealthCheckM | None = None
    disaster_levels: dict[int, LevelM] = {}
    indicators: dict[str, IndicatorM] = {}
    failover_conditions: list[ConditionM] = []
    cooldowns: dict[str, CooldownM] = {}
    gates: dict[str, GateM] = {}
    backup_layers: dict[str, BackupLayerM] = {}
    test_types: dict[str, TestTypeM] = {}
    checklist: dict[str, list[ChecklistItemM]] = {}
    procedure: dict[str, PhaseM] = {}
    escalation: dict[int, EscalationM] = {}


# --- reading and merging -----------------------------------------------------------------------
#: Largest input file (experiment, feature, plan, overrides) read; a bigger one is refused, not parsed.
MAX_INPUT_BYTES = 8 * 1024 * 1024


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a user's input file; ConfigError (one line naming the file) when it is missing, not a
    regular file, unreadable, larger than MAX_INPUT_BYTES or not UTF-8 text."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError(f"{p} is a directory, not a file")
        size = p.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise ConfigError(f"{p} is {size} bytes, larger than the {MAX_INPUT_BYTES // 1024 // 1024} MiB limit "
                              "for an input file")
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror or e}") from e
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"{p} is a binary file (NUL byte at offset {nul}), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from e


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; ConfigError (one line) when it is missing or malformed."""
    p = Path(path)
    text = read_text(p)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"invalid YAML in {p}{where}: {problem}") from e


def _canonical(d: Mapping[Any, Any], where: str) -> dict[Any, Any]:
    """Rename `<duration key>_s` aliases to the key, recursively; reject both spellings at once."""
    out: dict[Any, Any] = {}
    for k, v in d.items():
        key = k
        if isinstance(k, str) and k.endswith("_s") and k[:-2] in DURATION_KEYS:
            key = k[:-2]
        if key in out:
            raise ConfigError(f"{where}{key}: given twice (as {key!r} and {key + '_s'!r})")
        out[key] = _canon_value(v, f"{where}{key}.")
    return out


def _canon_value(v: Any, where: str) -> Any:
    if isinstance(v, Mapping):
        return _canonical(v, where)
    if isinstance(v, list):
        return [_canon_value(x, where) for x in v]
    return v


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any], _path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Deep-merge `overrides` over `base`: mappings merge by key, everything else replaces.

    New names inside a plan collection (e.g. an unknown service) are rejected with ConfigError.
    """
    out = dict(base)
    by_str = {str(k): k for k in base}
    for k, v in overrides.items():
        path = _path + (str(k),)
        if str(k) not in by_str:
            noun = _COLLECTIONS.get(_path)
            if noun is not None:
                known = ", ".join(str(x) for x in base)
                raise ConfigError(f"unknown {noun} {k!r} in overrides at {'.'.join(path)} (known: {known})")
            if not _path:
                raise ConfigError(f"unknown top-level key {k!r} in overrides")
            out[k] = v
            continue
        bk = by_str[str(k)]
        if isinstance(v, Mapping) and isinstance(base[bk], Mapping):
            out[bk] = merge_overrides(base[bk], v, path)
        else:
            out[bk] = v
    return out


def _error_line(e: ValidationError, source: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    msg = err["msg"].removeprefix("Value error, ")
    shown = err.get("input")
    if err["type"] == "missing":
        value = ""
    elif isinstance(shown, (dict, list)):
        value = f" (got a {'mapping' if isinstance(shown, dict) else 'list'})"
    else:
        value = f" (got {shown!r})"
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{value}{more}"


# --- building the domain plan -----------------------------------------------------------------
def _build(m: PlanM) -> P.Plan:
    checklist = []
    for phase, items in m.checklist.items():
        for it in items:
            checklist.append(P.ChecklistItem(phase=phase, id=it.id, item=it.item, expected=it.expected,
                                             command=it.command, threshold_s=it.threshold, layer=it.layer,
                                             count=it.count))
    conditions = []
    for c in m.failover_conditions:
        kind, val = c.threshold if c.threshold is not None else (None, None)
        conditions.append(P.FailoverCondition(
            component=c.component, type=c.type, action=c.action,
            threshold_s=val if kind == "seconds" else None, threshold_ratio=val if kind == "ratio" else None,
            duration_s=c.duration, count=c.count))
    return P.Plan(
        name=m.name,
        version=m.version,
        goals=P.Goals(m.goals.rto, m.goals.rpo, m.goals.availability, tuple(m.goals.compliance)),
        priorities=tuple(P.Priority(n, p.level, p.description, p.rto, p.rpo, tuple(p.functions))
                         for n, p in m.priorities.items()),
        tiers=tuple(P.Tier(n, t.description, t.availability, t.rto, t.rpo, t.support, t.dr_mode) for n, t in m.tiers.items()),
        services=tuple(P.Service(n, s.priority, s.rto, s.rpo, tuple(s.dependencies), tuple(s.recovery_steps), s.description)
                       for n, s in m.services.items()),
        infrastructure=tuple(P.Component(n, c.description, c.lab) for n, c in m.infrastructure.items()),
        declared_recovery_order=tuple(m.recovery_order),
        regions=tuple(P.Region(n, r.role, r.aws_region, r.mode, r.description) for n, r in m.regions.items()),
        replication=tuple(P.Replication(n, r.type, r.lag_target) for n, r in m.replication.items()),
        health_check=(P.HealthCheck(m.health_check.path, m.health_check.interval, m.health_check.failure_threshold)
                      if m.health_check else None),
        disaster_levels=tuple(P.DisasterLevel(n, d.name, d.description, tuple(d.examples), d.response,
                                              d.expected_downtime, d.min_failed_weight)
                              for n, d in sorted(m.disaster_levels.items())),
        indicators=tuple(P.Indicator(n, i.weight, i.description) for n, i in m.indicators.items()),
        failover_conditions=tuple(conditions),
        cooldowns=tuple(P.Cooldown(n, c.duration, tuple(c.actions)) for n, c in m.cooldowns.items()),
        gates=tuple(P.Gate(n, g.description, tuple(g.actions)) for n, g in m.gates.items()),
        backup_layers=tuple(
            P.BackupLayer(n, b.type, tuple(P.BackupComponent(cn, c.method, c.target, c.frequency, c.retention, c.storage,
                                                             c.lag_target, c.compliance, c.kind, c.prefix)
                                           for cn, c in b.components.items()))
            for n, b in m.backup_layers.items()),
        test_types=tuple(P.TestType(n, t.frequency, t.interval, *(t.duration or (0.0, 0.0)), t.scope,
                                    tuple(t.objectives), tuple(t.participants), t.profile)
                         for n, t in m.test_types.items()),
        checklist=tuple(checklist),
        procedure=tuple(P.RecoveryPhase(n, ph.title, *(ph.duration or (None, None)), tuple(ph.steps))
                        for n, ph in m.procedure.items()),
        escalation=tuple(P.EscalationLevel(n, e.name, e.response_time, tuple(e.authority), e.escalate_to, tuple(e.triggers))
                         for n, e in sorted(m.escalation.items())),
    )


def load_plan_dict(data: Any, source: str = "plan", overrides: Mapping[str, Any] | None = None) -> P.Plan:
    """Validate plan data (as parsed from YAML), merge `overrides` over it, and build the domain Plan."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the plan must be a mapping, got {type(data).__name__}")
    merged = _canonical(data, "")
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"overrides must be a mapping, got {type(overrides).__name__}")
        merged = merge_overrides(merged, _canonical(overrides, "overrides."))
        source = f"{source} (with overrides)"
    try:
        model = PlanM.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_error_line(e, source)) from e
    try:
        return _build(model)
    except P.PlanError as e:
        raise P.PlanError(f"{source}: {e}") from e


def load_plan(path: str | Path | None = None, overrides: Mapping[str, Any] | str | Path | None = None) -> P.Plan:
    """Load the plan from `path` (default: the packaged plan.yaml) with optional overrides (a mapping or a YAML file)."""
    p = Path(path) if path is not None else DEFAULT_PLAN
    data = read_yaml(p)
    if isinstance(overrides, (str, Path)):
        over = read_yaml(overrides)
        if over is None:
            over = {}
        if not isinstance(over, Mapping):
            raise ConfigError(f"{overrides}: overrides must be a mapping, got {type(over).__name__}")
        overrides = over
    return load_plan_dict(data, source=p.name, overrides=overrides)
