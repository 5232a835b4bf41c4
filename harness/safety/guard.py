"""The fault guard: safety decision, durable fault-ledger entry and timeline event before any fault is injected."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from harness.config import load_plan
from harness.core.plan import Plan
from harness.core.safety import LAB, Activation, Decision, PlannedFault, SafetyContext, decide
from harness.errors import SafetyRefusal, UsageError
from harness.lab.paths import state_dir as lab_state_dir
from harness.safety import context as run_context
from harness.safety.fault_ledger import DEFAULT_LEASE_S, FaultEntry, FaultLedger, ledger_path

__all__ = ["ACTIVITY_ACTIONS", "FAULT_ACTIONS", "Injection", "activation_history", "activations", "approve",
           "approvals", "check", "context_for", "enforce_cooldowns", "entry_actions", "experiment_gates", "func_ref",
           "dry_run_elsewhere", "gates_for_activity", "inject", "is_dry_run", "lab_approvals", "ledger", "mark_reverted", "plan",
           "require_gates", "revert_configuration"]

#: plan actions an activity performs when its function name is not itself one: the plan's gates attach to
#: actions (`plan.gates_for(action)`), so a run can check every gate it needs before its first fault
ACTIVITY_ACTIONS: dict[str, tuple[str, ...]] = {
    "harness.failover.runbook:fail_over": ("switch_region",),
    "harness.drill.exercises:backup_restore_drill": ("data_restore_from_backup",),
    "harness.backup:restore": ("restore_backup",),
}

#: plan actions a fault also stands for, beyond the action it is injected as: the plan's cooldowns attach to
#: actions (`plan.cooldowns_for(action)`); the runbook's fail_over is a DR activation (it switches the region)
#: and a database failover (it promotes the DR database) in one
FAULT_ACTIONS: dict[str, tuple[str, ...]] = {
    "fail_over": ("switch_region", "promote_replica"),
}

Revert = tuple[Callable[..., Any] | str, Mapping[str, Any]]


@dataclass(frozen=True)
class Injection:
    """What the guard decided for one fault, and its ledger entry when it is to be injected."""

    fault: PlannedFault
    decision: Decision
    entry: FaultEntry | None = None

    @property
    def proceed(self) -> bool:
        return self.decision.allowed

    @property
    def dry_run(self) -> bool:
        return self.decision.dry_run

    def to_dict(self) -> dict[str, Any]:
        return {"fault": self.fault.to_dict(), "decision": self.decision.to_dict(),
                "fault_id": self.entry.id if self.entry else None, "dry_run": self.dry_run}


# -- pure parts -----------------------------------------------------------------------------------
def func_ref(func: Callable[..., Any] | str) -> str:
    """"package.module:function" for an importable module-level function (the ledger's revert reference)."""
    if isinstance(func, str):
        if ":" not in func:
            raise UsageError(f"revert function {func!r} must be written 'package.module:function'")
        return func
    mod, name = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not mod or not name or "." in name or "<" in name:
        raise UsageError(f"revert function {func!r} is not an importable module-level function")
    return f"{mod}:{name}"


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _names(v: Any, key: str) -> frozenset[str]:
    if v is None:
        return frozenset()
    if isinstance(v, str):
        return frozenset(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, Iterable):
        return frozenset(str(x) for x in v)
    raise UsageError(f"configuration {key} must be a list of names, got {v!r}")


def _limit(v: Any, key: str) -> int | None:
    if v is None:
        return None
    try:
        n = int(v)
    except (TypeError, ValueError) as e:
        raise UsageError(f"configuration {key} must be an integer, got {v!r}") from e
    if n < 0:
        raise UsageError(f"configuration {key} must be >= 0, got {n}")
    return n


def _environment(configuration: Mapping[str, Any] | None) -> str:
    return str((configuration or {}).get("drill_environment") or LAB)


def lab_approvals(configuration: Mapping[str, Any] | None) -> frozenset[str]:
    """configuration drill_lab_approvals: pre-approved gates that count ONLY when the environment is the lab
    (an experiment file may pre-approve its gates for the embedded lab, never for anything real)."""
    names = _names((configuration or {}).get("drill_lab_approvals"), "drill_lab_approvals")
    return names if _environment(configuration) == LAB else frozenset()


def enforce_cooldowns(configuration: Mapping[str, Any] | None) -> bool:
    """Cooldowns apply outside the lab always, and in the lab only with configuration drill_enforce_cooldowns
    true (the lab's drills repeat many times an hour)."""
    cfg = configuration or {}
    return _environment(cfg) != LAB or _truthy(cfg.get("drill_enforce_cooldowns"))


def _planned(the_plan: Plan, fault_name: str, action: str | None, target: str, regions: Iterable[str],
             components: Iterable[str], gates: Iterable[str]) -> PlannedFault:
    """The fault as the guard chain sees it: the plan's gates and cooldowns of its action, plus the cooldowns
    of the actions it also stands for (FAULT_ACTIONS)."""
    extra = tuple(c for a in FAULT_ACTIONS.get(fault_name, ()) for c in the_plan.cooldowns_for(a))
    return PlannedFault.for_plan(the_plan, fault_name, action or fault_name, target, regions=regions,
                                 components=components, gates=gates, cooldowns=extra)


def entry_actions(entry: FaultEntry) -> tuple[str, ...]:
    """The plan actions a ledger entry stands for: the action the guard recorded (details["action"]; the fault
    name for entries without it) and those FAULT_ACTIONS adds for its fault."""
    action = str((entry.details or {}).get("action") or entry.fault)
    return tuple(dict.fromkeys((action, *FAULT_ACTIONS.get(entry.fault, ()))))


def _entry_environment(entry: FaultEntry) -> str:
    env = (entry.details or {}).get("environment")
    if not env:
        cfg = (entry.revert_kwargs or {}).get("configuration")
        env = cfg.get("drill_environment") if isinstance(cfg, Mapping) else None
    return str(env or LAB)


def activation_history(entries: Iterable[FaultEntry], the_plan: Plan) -> tuple[Activation, ...]:
    """Activations under the plan's cooldowns from ledger entries (no I/O): one per entry and cooldown its
    actions fall under, at its injected_at; entries of faults under no cooldown give none. Every entry counts,
    reverted or not: a cooldown runs from the activation."""
    out = []
    for e in entries:
        names = dict.fromkeys(c for a in entry_actions(e) for c in the_plan.cooldowns_for(a))
        for name in names:
            out.append(Activation(name, float(e.injected_at), _entry_environment(e), e.run_id,
                                  f"{e.fault} on {e.target}" if e.target else e.fault))
    return tuple(out)


def context_for(configuration: Mapping[str, Any] | None, session_approvals: Iterable[str], the_plan: Plan,
                now: float, session_dry_run: bool = False, history: Iterable[Activation] = ()) -> SafetyContext:
    """The guard chain's context from the configuration, the session and the activation history (no I/O).

    Keys: drill_environment (default "lab"), drill_allowed_environments, drill_approvals (explicit approvals,
    as --approve), drill_lab_approvals (honoured only in the lab), drill_dry_run, drill_max_regions,
    drill_max_components, drill_enforce_cooldowns (cooldowns in the lab too; outside it they always apply).
    """
    cfg = configuration or {}
    return SafetyContext.from_plan(
        the_plan,
        environment=_environment(cfg),
        allowed_environments=_names(cfg.get("drill_allowed_environments"), "drill_allowed_environments"),
        approved_gates=(_names(cfg.get("drill_approvals"), "drill_approvals") | lab_approvals(cfg)
                        | frozenset(session_approvals)),
        max_regions=_limit(cfg.get("drill_max_regions"), "drill_max_regions"),
        max_components=_limit(cfg.get("drill_max_components"), "drill_max_components"),
        dry_run=_truthy(cfg.get("drill_dry_run")) or session_dry_run,
        now=now,
        history=tuple(history),
        enforce_cooldowns=True if enforce_cooldowns(cfg) else None,
    )


# -- edges ----------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _load_plan(path: str | None) -> Plan:
    return load_plan(path)


def plan(configuration: Mapping[str, Any] | None = None) -> Plan:
    """The DR plan: the run's (resolved once when it began, overrides included; the run context named by
    configuration drill_run_id), else the packaged plan or the file configuration drill_plan names."""
    s = run_context.of(configuration)
    if s is not None and s.plan is not None:
        return s.plan
    p = (configuration or {}).get("drill_plan")
    return _load_plan(str(p) if p else None)


def approvals(configuration: Mapping[str, Any] | None = None) -> frozenset[str]:
    """Gates approved for this call: the run's approvals, configuration drill_approvals, and (in the lab
    only) configuration drill_lab_approvals."""
    s = run_context.of(configuration)
    return (_names((configuration or {}).get("drill_approvals"), "drill_approvals") | lab_approvals(configuration)
            | frozenset(s.approvals if s else ()))


def is_dry_run(configuration: Mapping[str, Any] | None = None) -> bool:
    s = run_context.of(configuration)
    return _truthy((configuration or {}).get("drill_dry_run")) or bool(s and _truthy(s.config.get("drill_dry_run")))


def dry_run_elsewhere(configuration: Mapping[str, Any] | None = None) -> bool:
    """A dry run against an environment that is not the embedded lab: nothing of the lab may be resolved or
    touched; cloud actions go through the run's intercepted clients (recorded, never sent)."""
    return is_dry_run(configuration) and _environment(configuration) != LAB


def _state_dir(configuration: Mapping[str, Any] | None) -> Path:
    """configuration drill_state_dir, else $DRILL_STATE_DIR, else the default state dir."""
    return lab_state_dir((configuration or {}).get("drill_state_dir") or None)


def revert_configuration(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The part of the configuration a revert needs later to find the same lab (never secrets), and the run
    (a revert during the run records into its timeline; later the id names no run context)."""
    out: dict[str, Any] = {"drill_state_dir": str(_state_dir(configuration))}
    cfg = configuration or {}
    if cfg.get("drill_environment"):
        out["drill_environment"] = cfg["drill_environment"]
    if cfg.get(run_context.RUN_ID_KEY):
        out[run_context.RUN_ID_KEY] = str(cfg[run_context.RUN_ID_KEY])
    return out


def ledger(configuration: Mapping[str, Any] | None = None) -> FaultLedger:
    """The fault ledger of the configured lab ($DRILL_FAULT_LEDGER wins)."""
    return FaultLedger(ledger_path(_state_dir(configuration)))


def activations(configuration: Mapping[str, Any] | None, the_plan: Plan) -> tuple[Activation, ...]:
    """The activation history the cooldowns decide on: the fault ledger's injections in this environment, but
    those of the running drill (the steps of one drill do not cool each other down). Empty (no ledger read)
    when cooldowns do not apply (the lab without drill_enforce_cooldowns)."""
    if not enforce_cooldowns(configuration):
        return ()
    env = _environment(configuration)
    s = run_context.of(configuration)
    run_id = s.run_id if s else None
    return tuple(a for a in activation_history(ledger(configuration).injected(), the_plan)
                 if a.environment == env and (run_id is None or a.run_id != run_id))


def _context(configuration: Mapping[str, Any] | None, the_plan: Plan, session_approvals: Iterable[str],
             session_dry_run: bool = False) -> SafetyContext:
    return context_for(configuration, session_approvals, the_plan, time.time(), session_dry_run=session_dry_run,
                       history=activations(configuration, the_plan))


def _event(configuration: Mapping[str, Any] | None, kind: str, event: str, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.event(kind, event, **data)


def _refuse(configuration: Mapping[str, Any] | None, reason: str) -> SafetyRefusal:
    """The SafetyRefusal to raise, kept (typed) in the run context too."""
    return run_context.record_refusal(run_context.of(configuration), SafetyRefusal(reason))


def _decide(fault: PlannedFault, configuration: Mapping[str, Any] | None) -> Decision:
    s = run_context.of(configuration)
    ctx = _context(configuration, plan(configuration), s.approvals if s else (),
                   session_dry_run=bool(s and _truthy(s.config.get("drill_dry_run"))))
    return decide(fault, ctx)


def _pre_fault_gate(configuration: Mapping[str, Any] | None) -> None:
    """Before a run's first fault (a running drill only): SafetyRefusal unless its pre_test evidence holds."""
    s = run_context.of(configuration)
    if s is not None and s.fault_t is None:
        try:
            s.pre_fault_gate(configuration)
        except SafetyRefusal as e:
            raise run_context.record_refusal(s, e)


def check(fault_name: str, target: str, *, action: str | None = None, gate: str | Iterable[str] | None = None,
          regions: Iterable[str] = (), components: Iterable[str] = (),
          configuration: Mapping[str, Any] | None = None) -> Decision:
    """The guard chain alone (no ledger, no event unless refused): for actions that must read state before
    `inject`, so that a refusal always comes first."""
    the_plan = plan(configuration)
    gates = (gate,) if isinstance(gate, str) else tuple(gate or ())
    fault = _planned(the_plan, fault_name, action, target, regions, components, gates)
    decision = _decide(fault, configuration)
    if decision.refused:
        _event(configuration, "fault", fault_name, phase="refused", reason=decision.reason, guard=decision.guard,
               target=target)
        raise _refuse(configuration, decision.reason)
    return decision


def inject(fault_name: str, target: str, *, revert: Revert, action: str | None = None,
           gate: str | Iterable[str] | None = None, regions: Iterable[str] = (), components: Iterable[str] = (),
           configuration: Mapping[str, Any] | None = None, details: Mapping[str, Any] | None = None,
           lease_s: float = DEFAULT_LEASE_S) -> Injection:
    """Run the guard chain for one fault; on "inject" write the ledger entry (fsync) and the timeline event.

    Call it right before changing anything and change nothing unless `.proceed`. Refusals raise
    SafetyRefusal ("not injecting: ..."); a dry run records the planned fault and returns proceed=False.
    The revert function gets `configuration` (the lab's state dir only) added to its kwargs.
    """
    the_plan = plan(configuration)
    gates = (gate,) if isinstance(gate, str) else tuple(gate or ())
    fault = _planned(the_plan, fault_name, action, target, regions, components, gates)
    decision = _decide(fault, configuration)
    # the ledger entry keeps the plan action (and the environment): the activation history reads them back
    info = {"target": target, "regions": list(fault.regions), "components": list(fault.components),
            **dict(details or {}), "action": fault.action, "environment": _environment(configuration)}
    if decision.refused:
        _event(configuration, "fault", fault_name, phase="refused", reason=decision.reason, guard=decision.guard,
               **info)
        raise _refuse(configuration, decision.reason)
    if decision.dry_run:
        _event(configuration, "fault", fault_name, phase="planned", dry_run=True, reason=decision.reason,
               **info)
        return Injection(fault, decision)
    _pre_fault_gate(configuration)  # the run's first fault: only when its pre_test evidence holds
    func, kwargs = revert
    revert_kwargs = {**dict(kwargs), "configuration": revert_configuration(configuration)}
    s = run_context.of(configuration)
    entry = ledger(configuration).record(fault_name, target, func_ref(func), revert_kwargs, lease_s=lease_s,
                                        run_id=s.run_id if s else None, details=info)
    _event(configuration, "fault", fault_name, phase="inject", fault_id=entry.id, revert=entry.revert_func,
           **info)
    return Injection(fault, decision, entry)


def mark_reverted(faults: str | Iterable[str], target: str, configuration: Mapping[str, Any] | None = None,
                  how: str = "rollback", **data: Any) -> list[str]:
    """Mark the active ledger entries of `faults` on `target` reverted and record a revert event for each."""
    names = (faults,) if isinstance(faults, str) else tuple(faults)
    led = ledger(configuration)
    ids = []
    for name in names:
        for e in led.active_for(name, target):
            led.mark_reverted(e.id, how)
            ids.append(e.id)
            _event(configuration, "fault", name, phase="revert", fault_id=e.id, target=target, how=how, **data)
    return ids


def approve(gate: str, name: str, configuration: Mapping[str, Any] | None = None,
            regions: Iterable[str] = ()) -> Decision:
    """Check an approval gate for a step that is not itself a fault (e.g. the DR region switch)."""
    the_plan = plan(configuration)
    fault = PlannedFault.for_plan(the_plan, name, gate, regions=regions, gates=(gate,))
    decision = decide(fault, _context(configuration, the_plan, approvals(configuration)))
    if decision.refused:
        _event(configuration, "note", f"{name} refused", gate=gate, reason=decision.reason)
        raise _refuse(configuration, decision.reason)
    return decision


# -- gates a run needs, checked before its first fault -------------------------------------------
def gates_for_activity(ref: str, the_plan: Plan) -> tuple[str, ...]:
    """Gates of the plan an activity ("package.module:function") needs: those of the plan action named like
    the function, plus those of the actions in ACTIVITY_ACTIONS."""
    func = ref.rpartition(":")[2]
    actions = (func, *ACTIVITY_ACTIONS.get(ref, ()))
    return tuple(dict.fromkeys(g for a in actions for g in the_plan.gates_for(a)))


def experiment_gates(experiment: Mapping[str, Any], the_plan: Plan) -> dict[str, tuple[str, ...]]:
    """{activity name: gates} for the method's python activities that need a gate (rollbacks need none)."""
    out: dict[str, tuple[str, ...]] = {}
    for act in experiment.get("method") or []:
        prov = act.get("provider") or {} if isinstance(act, Mapping) else {}
        if prov.get("type") != "python" or not prov.get("module") or not prov.get("func"):
            continue
        gates = gates_for_activity(f"{prov['module']}:{prov['func']}", the_plan)
        if gates:
            out[str(act.get("name") or prov["func"])] = gates
    return out


def require_gates(gates: Iterable[str], configuration: Mapping[str, Any] | None = None, *,
                  name: str = "this drill", cooldowns: Iterable[str] = ()) -> Decision:
    """Preflight of a run, before its first fault: the environment allow-list and every gate in `gates` (the
    run's approvals: --approve, DRILL_APPROVALS, drill_approvals, and drill_lab_approvals in the lab only),
    and the cooldowns of those gates as plan actions (as `approve` checks them: dr_region_switch is under
    dr_activation) plus `cooldowns`, where cooldowns apply.

    A refusal raises SafetyRefusal ("not injecting: ...") and records a failed check (no fault event:
    nothing was injected); a pass records the gates it checked.
    """
    the_plan = plan(configuration)
    wanted = tuple(dict.fromkeys(gates))
    cools = tuple(dict.fromkeys((*(c for g in wanted for c in the_plan.cooldowns_for(g)), *cooldowns)))
    fault = PlannedFault(name, "preflight", gates=wanted, cooldowns=cools)
    decision = decide(fault, _context(configuration, the_plan, approvals(configuration),
                                      session_dry_run=is_dry_run(configuration)))
    if decision.refused:
        _event(configuration, "check", "safety preflight refused", status="fail", reason=decision.reason,
               guard=decision.guard, gates=list(wanted), environment=_environment(configuration))
        raise _refuse(configuration, decision.reason)
    _event(configuration, "check", "safety preflight passed", status="pass", gates=list(wanted),
           environment=_environment(configuration))
    return decision
