"""Safety decisions as pure functions: the fault guard chain (allow-list, gates, blast radius, cooldowns, dry-run) and the disaster level."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from harness.core.durations import format_duration
from harness.core.plan import DisasterLevel, Indicator, Plan, PlanError
from harness.core.timeline import iso

LAB = "lab"

INJECT = "inject"
DRY_RUN = "dry_run"
REFUSED = "refused"


@dataclass(frozen=True)
class PlannedFault:
    """A fault the drill intends to inject: what, where, and what it needs from the guards."""

    name: str
    action: str
    target: str = ""
    regions: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    gates: tuple[str, ...] = ()
    cooldowns: tuple[str, ...] = ()

    @classmethod
    def for_plan(cls, plan: Plan, name: str, action: str, target: str = "", regions: Iterable[str] = (),
                 components: Iterable[str] = (), gates: Iterable[str] = (), cooldowns: Iterable[str] = ()) -> "PlannedFault":
        """A fault whose gates and cooldowns include those the plan attaches to `action`."""
        g = tuple(dict.fromkeys((*plan.gates_for(action), *gates)))
        c = tuple(dict.fromkeys((*plan.cooldowns_for(action), *cooldowns)))
        return cls(name, action, target, tuple(regions), tuple(components), g, c)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "target": self.target, "regions": list(self.regions),
                "components": list(self.components), "gates": list(self.gates), "cooldowns": list(self.cooldowns)}


@dataclass(frozen=True)
class Activation:
    """A past activation under a cooldown (e.g. a database failover at time t)."""

    cooldown: str
    t: float
    environment: str = LAB
    run_id: str | None = None
    source: str = ""  # what it was, e.g. "promote_standby on postgres:dr"


@dataclass(frozen=True)
class SafetyContext:
    """Everything the guard chain decides on; built once per run at the edge.

    `enforce_cooldowns` None means: enforce everywhere but in the lab (drills repeat there).
    `max_regions` / `max_components` None means unlimited.
    """

    environment: str = LAB
    allowed_environments: frozenset[str] = frozenset()
    approved_gates: frozenset[str] = frozenset()
    known_gates: frozenset[str] | None = None
    max_regions: int | None = None
    max_components: int | None = None
    dry_run: bool = False
    now: float = 0.0
    cooldowns: Mapping[str, float] = field(default_factory=dict)
    history: tuple[Activation, ...] = ()
    enforce_cooldowns: bool | None = None

    @classmethod
    def from_plan(cls, plan: Plan, **kw: Any) -> "SafetyContext":
        """A context with the plan's gates and cooldown durations."""
        kw.setdefault("known_gates", frozenset(g.name for g in plan.gates))
        kw.setdefault("cooldowns", {c.name: c.duration_s for c in plan.cooldowns})
        for k in ("allowed_environments", "approved_gates"):
            if k in kw:
                kw[k] = frozenset(kw[k])
        if "history" in kw:
            kw["history"] = tuple(kw["history"])
        return cls(**kw)


@dataclass(frozen=True)
class Decision:
    """The guard chain's verdict: inject, dry_run (recorded, not injected) or refused (with the guard)."""

    allowed: bool
    reason: str
    outcome: str = INJECT
    guard: str = ""
    reasons: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.outcome == REFUSED

    @property
    def dry_run(self) -> bool:
        return self.outcome == DRY_RUN

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "outcome": self.outcome, "reason": self.reason, "guard": self.guard,
                "reasons": list(self.reasons)}


def _environment(fault: PlannedFault, ctx: SafetyContext) -> str | None:
    if ctx.environment == LAB or ctx.environment in ctx.allowed_environments:
        return None
    allowed = ", ".join(sorted({LAB, *ctx.allowed_environments}))
    return (f"not injecting: {fault.name!r}: environment {ctx.environment!r} is not on the allow-list "
            f"(allowed: {allowed}); name it in the config to allow it")


def _gates(fault: PlannedFault, ctx: SafetyContext) -> str | None:
    if ctx.known_gates is not None:
        unknown = [g for g in fault.gates if g not in ctx.known_gates]
        if unknown:
            return f"not injecting: {fault.name!r} names unknown approval gate {unknown[0]!r} (known: {', '.join(sorted(ctx.known_gates))})"
    missing = [g for g in fault.gates if g not in ctx.approved_gates]
    if missing:
        flags = " ".join(f"--approve {g}" for g in missing)
        return f"not injecting: {fault.name!r} needs approval for {', '.join(missing)} (pass {flags})"
    return None


def _blast_radius(fault: PlannedFault, ctx: SafetyContext) -> str | None:
    if ctx.max_regions is not None and len(fault.regions) > ctx.max_regions:
        return (f"not injecting: {fault.name!r} touches {len(fault.regions)} regions ({', '.join(fault.regions)}), "
                f"blast radius allows {ctx.max_regions}")
    if ctx.max_components is not None and len(fault.components) > ctx.max_components:
        return (f"not injecting: {fault.name!r} touches {len(fault.components)} components ({', '.join(fault.components)}), "
                f"blast radius allows {ctx.max_components}")
    return None


def cooldown_remaining(name: str, ctx: SafetyContext) -> tuple[float, Activation | None]:
    """Seconds left on cooldown `name` at ctx.now (0 when free) and the activation causing it."""
    if name not in ctx.cooldowns:
        raise PlanError(f"unknown cooldown {name!r} (known: {', '.join(sorted(ctx.cooldowns))})")
    duration = ctx.cooldowns[name]
    past = [a for a in ctx.history if a.cooldown == name and a.t <= ctx.now]
    if not past:
        return 0.0, None
    last = max(past, key=lambda a: a.t)
    return max(0.0, last.t + duration - ctx.now), last


def _cooldowns(fault: PlannedFault, ctx: SafetyContext) -> str | None:
    enforce = ctx.enforce_cooldowns if ctx.enforce_cooldowns is not None else ctx.environment != LAB
    if not enforce:
        return None
    for name in fault.cooldowns:
        if name not in ctx.cooldowns:
            return f"not injecting: {fault.name!r} names unknown cooldown {name!r} (known: {', '.join(sorted(ctx.cooldowns))})"
        left, last = cooldown_remaining(name, ctx)
        if left > 0 and last is not None:
            what = ", ".join(x for x in (f"run {last.run_id}" if last.run_id else "", last.source) if x)
            return (f"not injecting: {fault.name!r}: cooldown {name} ({format_duration(ctx.cooldowns[name])}): "
                    f"last activation {format_duration(ctx.now - last.t)} ago{f' ({what})' if what else ''}, "
                    f"wait {format_duration(left)} (until {iso(last.t + ctx.cooldowns[name])})")
    return None


GUARDS = (("environment", _environment), ("approval", _gates), ("blast_radius", _blast_radius), ("cooldown", _cooldowns))


def decide(fault: PlannedFault, context: SafetyContext) -> Decision:
    """Run the guard chain. Refusals win over dry-run, so a dry run shows what would be refused.

    Every refusal reason starts with "not injecting: "; a dry run gives allowed=False with outcome
    "dry_run" and reason "dry-run: recorded, not injected".
    """
    refusals = [(name, r) for name, g in GUARDS if (r := g(fault, context)) is not None]
    if refusals:
        return Decision(False, refusals[0][1], REFUSED, refusals[0][0], tuple(r for _, r in refusals))
    if context.dry_run:
        return Decision(False, "dry-run: recorded, not injected", DRY_RUN, "dry_run")
    return Decision(True, f"injecting {fault.name!r} ({fault.action}) in {context.environment}: all guards passed", INJECT)


# --- disaster level -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LevelDecision:
    """The detector's verdict: level 0 (normal) .. 4 (catastrophic), the failed weight and why."""

    level: int
    name: str
    failed_weight: int
    failed: tuple[str, ...]
    unknown: tuple[str, ...] = ()
    response: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "name": self.name, "failed_weight": self.failed_weight,
                "failed": list(self.failed), "unknown": list(self.unknown), "response": self.response}


def disaster_level(indicators: Iterable[Indicator], levels: Iterable[DisasterLevel],
                   healthy: Mapping[str, bool | None]) -> LevelDecision:
    """Level from indicator states: the sum of failed weights against the levels' thresholds.

    `healthy` maps indicator name -> True/False, or None when it could not be evaluated; unknown
    indicators are listed, not counted, and an indicator absent from `healthy` counts as unknown.
    A state for an indicator the plan does not define raises PlanError.
    """
    inds = list(indicators)
    names = {i.name for i in inds}
    for k in healthy:
        if k not in names:
            raise PlanError(f"unknown health indicator {k!r} (known: {', '.join(sorted(names))})")
    failed = tuple(i.name for i in inds if healthy.get(i.name) is False)
    unknown = tuple(i.name for i in inds if healthy.get(i.name) is None)
    weight = sum(i.weight for i in inds if i.name in failed)
    chosen = None
    for lvl in sorted(levels, key=lambda d: d.level):
        if weight >= lvl.min_failed_weight:
            chosen = lvl
    if chosen is None:
        return LevelDecision(0, "normal", weight, failed, unknown, "none")
    return LevelDecision(chosen.level, chosen.name, weight, failed, unknown, chosen.response)


def plan_disaster_level(plan: Plan, healthy: Mapping[str, bool | None]) -> LevelDecision:
    """`disaster_level` with the plan's indicators and levels."""
    return disaster_level(plan.indicators, plan.disaster_levels, healthy)
