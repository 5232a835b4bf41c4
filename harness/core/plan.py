"""The DR plan as frozen domain objects: priorities, tiers, service catalog, levels, detector, gates, checklist."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from harness.errors import ConfigError

CHECKLIST_PHASES = ("pre_test", "during_test", "post_test")


class PlanError(ConfigError):
    """The plan is inconsistent (unknown reference, dependency cycle, duplicate name)."""


def _dict(obj: Any) -> dict[str, Any]:
    d = asdict(obj)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass(frozen=True)
class Goals:
    """Top-level continuity goals of the plan (section 1.1)."""

    rto_s: float
    rpo_s: float
    availability: str
    compliance: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Priority:
    """A recovery priority class (P1..P3) with its objectives and the business functions in it."""

    name: str
    level: int
    description: str
    rto_s: float
    rpo_s: float
    functions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Tier:
    """A customer service tier (platinum, gold, silver): SLA availability, RTO/RPO and DR mode."""

    name: str
    description: str
    availability: str
    rto_s: float
    rpo_s: float
    support: str
    dr_mode: str

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Service:
    """A catalog service with its own recovery objectives, dependencies and recovery steps."""

    name: str
    priority: str
    rto_s: float
    rpo_s: float
    dependencies: tuple[str, ...] = ()
    recovery_steps: tuple[str, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Component:
    """An infrastructure component services depend on (postgresql, redis, python-grpc, s3)."""

    name: str
    description: str = ""
    lab: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Region:
    """A region of the deployment (primary or dr) and its mode."""

    name: str
    role: str
    aws_region: str
    mode: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Replication:
    """Cross-region replication of one component and its lag target."""

    component: str
    type: str
    lag_target_s: float

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class HealthCheck:
    """Global endpoint health check (Route 53 failover routing)."""

    path: str
    interval_s: float
    failure_threshold: int

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class DisasterLevel:
    """A disaster level (1 minor .. 4 catastrophic) with examples, response and expected downtime."""

    level: int
    name: str
    description: str
    examples: tuple[str, ...]
    response: str
    expected_downtime_s: float
    min_failed_weight: int

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Indicator:
    """A health indicator of the disaster detector and its weight."""

    name: str
    weight: int
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class FailoverCondition:
    """An automatic failover condition: when `type` crosses a threshold (for a duration), take `action`."""

    component: str
    type: str
    action: str
    threshold_s: float | None = None
    threshold_ratio: float | None = None
    duration_s: float | None = None
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Cooldown:
    """Minimum time between two activations of the actions it covers."""

    name: str
    duration_s: float
    actions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Gate:
    """A manual approval gate and the actions that need it."""

    name: str
    description: str = ""
    actions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class BackupComponent:
    """One component of a backup layer: method, target, frequency, retention, storage."""

    name: str
    method: str = ""
    target: str = ""
    frequency_s: float | None = None
    retention_s: float | None = None
    storage: str = ""
    lag_target_s: float | None = None
    compliance: str = ""
    #: what the harness takes for it (`drill backup create --layer LAYER.COMPONENT`): pg_dump, pg_basebackup,
    #: wal (continuous, by the lab), redis_rdb; "" when the harness takes nothing (e.g. EBS snapshots)
    kind: str = ""
    #: where its objects live in the backup bucket
    prefix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class BackupLayer:
    """A backup layer (realtime replication, periodic snapshot, long-term archive)."""

    name: str
    type: str
    components: tuple[BackupComponent, ...] = ()

    def component(self, name: str) -> BackupComponent:
        for c in self.components:
            if c.name == name:
                return c
        raise PlanError(f"unknown component {name!r} in backup layer {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "components": [c.to_dict() for c in self.components]}


@dataclass(frozen=True)
class TestType:
    """A kind of DR test (tabletop, simulation, full, chaos), its cadence and the drill profile running it."""

    __test__ = False  # not a pytest test class

    name: str
    frequency: str
    interval_s: float
    duration_min_s: float
    duration_max_s: float
    scope: str
    objectives: tuple[str, ...] = ()
    participants: tuple[str, ...] = ()
    profile: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class ChecklistItem:
    """A drill checklist item: phase, stable id, what to check, what is expected, optional numeric threshold."""

    phase: str
    id: str
    item: str
    expected: str
    command: str = ""
    threshold_s: float | None = None
    #: backup items: the backup layer they judge ("LAYER.COMPONENT") and how many recent backups must exist
    layer: str = ""
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class RecoveryPhase:
    """A phase of the recovery procedure (assessment .. normalization) with its time budget and steps."""

    name: str
    title: str
    duration_min_s: float | None
    duration_max_s: float | None
    steps: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class EscalationLevel:
    """A level of the escalation matrix: who, how fast, what they may decide, when to escalate."""

    level: int
    name: str
    response_time_s: float
    authority: tuple[str, ...] = ()
    escalate_to: int | None = None
    triggers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


def recovery_order(services: Iterable[Service]) -> tuple[str, ...]:
    """Dependency-respecting order of the services, stable by catalog order.

    Dependencies that are not services (infrastructure such as postgresql) impose no order.
    Raises PlanError on a dependency cycle, naming it.
    """
    catalog = list(services)
    names = [s.name for s in catalog]
    deps = {s.name: [d for d in s.dependencies if d in names] for s in catalog}
    done: list[str] = []
    placed: set[str] = set()
    while len(done) < len(catalog):
        # Take the first service, in catalog order, whose service dependencies are all placed.
        for name in names:
            if name not in placed and all(d in placed for d in deps[name]):
                done.append(name)
                placed.add(name)
                break
        else:
            raise PlanError(f"dependency cycle in the service catalog: {' -> '.join(_find_cycle(deps, placed))}")
    return tuple(done)


def _find_cycle(deps: Mapping[str, list[str]], placed: set[str]) -> list[str]:
    start = next(n for n in deps if n not in placed)
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = next(d for d in deps[node] if d not in placed)
    return path[path.index(node):] + [node]


def _unique(kind: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise PlanError(f"duplicate {kind} {n!r}")
        seen.add(n)


@dataclass(frozen=True)
class Plan:
    """The whole DR plan. Built by `harness.config.load_plan`; validates its own cross-references."""

    name: str
    goals: Goals
    priorities: tuple[Priority, ...]
    tiers: tuple[Tier, ...]
    services: tuple[Service, ...]
    infrastructure: tuple[Component, ...] = ()
    declared_recovery_order: tuple[str, ...] = ()
    regions: tuple[Region, ...] = ()
    replication: tuple[Replication, ...] = ()
    health_check: HealthCheck | None = None
    disaster_levels: tuple[DisasterLevel, ...] = ()
    indicators: tuple[Indicator, ...] = ()
    failover_conditions: tuple[FailoverCondition, ...] = ()
    cooldowns: tuple[Cooldown, ...] = ()
    gates: tuple[Gate, ...] = ()
    backup_layers: tuple[BackupLayer, ...] = ()
    test_types: tuple[TestType, ...] = ()
    checklist: tuple[ChecklistItem, ...] = ()
    procedure: tuple[RecoveryPhase, ...] = ()
    escalation: tuple[EscalationLevel, ...] = ()
    version: str = ""
    _order: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _unique("priority", (p.name for p in self.priorities))
        _unique("tier", (t.name for t in self.tiers))
        _unique("service", (s.name for s in self.services))
        _unique("infrastructure component", (c.name for c in self.infrastructure))
        _unique("disaster level", (str(d.level) for d in self.disaster_levels))
        _unique("indicator", (i.name for i in self.indicators))
        _unique("gate", (g.name for g in self.gates))
        _unique("cooldown", (c.name for c in self.cooldowns))
        _unique("checklist item", (c.id for c in self.checklist))
        _unique("test type", (t.name for t in self.test_types))
        if not self.services:
            raise PlanError("the service catalog is empty")
        prios = {p.name for p in self.priorities}
        known = {s.name for s in self.services} | {c.name for c in self.infrastructure}
        for s in self.services:
            if s.priority not in prios:
                raise PlanError(f"service {s.name!r} has unknown priority {s.priority!r} (known: {', '.join(sorted(prios))})")
            for d in s.dependencies:
                if d not in known:
                    raise PlanError(f"service {s.name!r} depends on unknown {d!r} (not a service nor an infrastructure component)")
                if d == s.name:
                    raise PlanError(f"service {s.name!r} depends on itself")
            if s.rto_s < 0 or s.rpo_s < 0:
                raise PlanError(f"service {s.name!r} has a negative objective")
        for item in self.checklist:
            if item.phase not in CHECKLIST_PHASES:
                raise PlanError(f"checklist item {item.id!r} has unknown phase {item.phase!r} (known: {', '.join(CHECKLIST_PHASES)})")
        levels = sorted(self.disaster_levels, key=lambda d: d.level)
        for lower, higher in zip(levels, levels[1:]):
            if higher.min_failed_weight <= lower.min_failed_weight:
                raise PlanError(f"disaster level {higher.level} threshold {higher.min_failed_weight} must exceed level "
                                f"{lower.level} threshold {lower.min_failed_weight}")
        for ind in self.indicators:
            if ind.weight < 0:
                raise PlanError(f"indicator {ind.name!r} has negative weight {ind.weight}")
        computed = recovery_order(self.services)
        order = computed
        if self.declared_recovery_order:
            declared = self.declared_recovery_order
            if sorted(declared) != sorted(s.name for s in self.services):
                missing = sorted(set(s.name for s in self.services) - set(declared))
                extra = sorted(set(declared) - set(s.name for s in self.services))
                raise PlanError(f"recovery_order must list every service exactly once (missing: {missing}, unknown: {extra})")
            pos = {n: i for i, n in enumerate(declared)}
            for s in self.services:
                for d in s.dependencies:
                    if d in pos and pos[d] > pos[s.name]:
                        raise PlanError(f"recovery_order puts {s.name!r} before its dependency {d!r}")
            order = declared
        object.__setattr__(self, "_order", order)

    # --- lookups -------------------------------------------------------------------------
    @property
    def recovery_order(self) -> tuple[str, ...]:
        """Service names in recovery order (the declared order, validated, else the computed one)."""
        return self._order

    def services_in_recovery_order(self) -> tuple[Service, ...]:
        return tuple(self.service(n) for n in self._order)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise PlanError(f"unknown service {name!r} (known: {', '.join(s.name for s in self.services)})")

    def priority(self, name: str) -> Priority:
        for p in self.priorities:
            if p.name == name:
                return p
        raise PlanError(f"unknown priority {name!r} (known: {', '.join(p.name for p in self.priorities)})")

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise PlanError(f"unknown tier {name!r} (known: {', '.join(t.name for t in self.tiers)})")

    def disaster_level(self, level: int) -> DisasterLevel:
        for d in self.disaster_levels:
            if d.level == level:
                return d
        raise PlanError(f"unknown disaster level {level!r}")

    def gate(self, name: str) -> Gate:
        for g in self.gates:
            if g.name == name:
                return g
        raise PlanError(f"unknown approval gate {name!r} (known: {', '.join(g.name for g in self.gates)})")

    def cooldown(self, name: str) -> Cooldown:
        for c in self.cooldowns:
            if c.name == name:
                return c
        raise PlanError(f"unknown cooldown {name!r} (known: {', '.join(c.name for c in self.cooldowns)})")

    def test_type(self, name: str) -> TestType:
        for t in self.test_types:
            if t.name == name or t.profile == name:
                return t
        raise PlanError(f"unknown test type {name!r} (known: {', '.join(t.name for t in self.test_types)})")

    def checklist_item(self, item_id: str) -> ChecklistItem:
        for c in self.checklist:
            if c.id == item_id:
                return c
        raise PlanError(f"unknown checklist item {item_id!r} (known: {', '.join(c.id for c in self.checklist)})")

    def backup_component(self, ref: str) -> tuple[BackupLayer, BackupComponent]:
        """The backup layer and component named "LAYER.COMPONENT"; PlanError naming the known ones otherwise."""
        layer_name, _, comp = ref.partition(".")
        for layer in self.backup_layers:
            if layer.name == layer_name:
                for c in layer.components:
                    if c.name == comp:
                        return layer, c
        known = ", ".join(self.backup_refs())
        raise PlanError(f"unknown backup layer {ref!r} (known: {known})")

    def backup_refs(self) -> tuple[str, ...]:
        """"LAYER.COMPONENT" of every backup component the harness takes (one with a kind)."""
        return tuple(f"{layer.name}.{c.name}" for layer in self.backup_layers for c in layer.components if c.kind)

    def gates_for(self, action: str) -> tuple[str, ...]:
        """Names of the approval gates an action needs."""
        return tuple(g.name for g in self.gates if action in g.actions)

    def cooldowns_for(self, action: str) -> tuple[str, ...]:
        """Names of the cooldowns an action is subject to."""
        return tuple(c.name for c in self.cooldowns if action in c.actions)

    def dependents(self, name: str) -> tuple[str, ...]:
        """Services depending on `name` directly or transitively, in recovery order."""
        out: set[str] = set()
        frontier = {name}
        while frontier:
            nxt = {s.name for s in self.services if set(s.dependencies) & frontier} - out
            out |= nxt
            frontier = nxt
        return tuple(n for n in self._order if n in out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "goals": self.goals.to_dict(),
            "priorities": [p.to_dict() for p in self.priorities],
            "tiers": [t.to_dict() for t in self.tiers],
            "services": [s.to_dict() for s in self.services],
            "infrastructure": [c.to_dict() for c in self.infrastructure],
            "recovery_order": list(self.recovery_order),
            "regions": [r.to_dict() for r in self.regions],
            "replication": [r.to_dict() for r in self.replication],
            "health_check": self.health_check.to_dict() if self.health_check else None,
            "disaster_levels": [d.to_dict() for d in self.disaster_levels],
            "indicators": [i.to_dict() for i in self.indicators],
            "failover_conditions": [c.to_dict() for c in self.failover_conditions],
            "cooldowns": [c.to_dict() for c in self.cooldowns],
            "gates": [g.to_dict() for g in self.gates],
            "backup_layers": [b.to_dict() for b in self.backup_layers],
            "test_types": [t.to_dict() for t in self.test_types],
            "checklist": [c.to_dict() for c in self.checklist],
            "procedure": [p.to_dict() for p in self.procedure],
            "escalation": [e.to_dict() for e in self.escalation],
        }
