"""The pre-fault gate: a run's first fault is injected only when its pre_test evidence holds (or is declared degraded in the lab)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from harness.core.safety import LAB
from harness.errors import SafetyRefusal, UsageError

__all__ = ["DEGRADED_KEY", "degraded_items", "gate_refusal", "pre_test_items", "refusal_of_observations",
           "require_pre_test"]

#: configuration key: the pre_test items a scenario deliberately degrades (lab only), e.g. ["replica_lag"]
DEGRADED_KEY = "drill_degraded_pre_test"


def pre_test_items(plan: Any) -> tuple[str, ...]:
    """The plan's pre_test checklist item ids, in plan order."""
    return tuple(c.id for c in plan.checklist if c.phase == "pre_test")


def _names(v: Any) -> frozenset[str]:
    if v is None:
        return frozenset()
    if isinstance(v, str):
        return frozenset(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, (list, tuple, set, frozenset)):
        return frozenset(str(x) for x in v)
    raise UsageError(f"configuration {DEGRADED_KEY} must be a list of pre_test item ids, got {v!r}")


def degraded_items(plan: Any, *configs: Mapping[str, Any] | None) -> frozenset[str]:
    """The pre_test items declared degraded (configuration drill_degraded_pre_test of any of `configs`); a name
    that is not a pre_test item of the plan is a usage error."""
    names = frozenset().union(*(_names((c or {}).get(DEGRADED_KEY)) for c in configs))
    known = pre_test_items(plan)
    bad = sorted(n for n in names if n not in known)
    if bad:
        raise UsageError(f"{DEGRADED_KEY}: {', '.join(repr(b) for b in bad)} is not a pre_test item of the plan "
                         f"({', '.join(known)})")
    return names


def gate_refusal(items: Iterable[str], observations: Mapping[str, Mapping[str, Any]], degraded: Iterable[str],
                 environment: str) -> str | None:
    """The refusal ("not injecting: pre_test <item>: <observed>") for the first item whose evidence does not
    hold, None when all hold (no I/O). An item declared degraded passes in the lab and is refused elsewhere;
    an item never observed does not hold."""
    degraded = frozenset(degraded)
    for item in items:
        ob = observations.get(item)
        status = (ob or {}).get("status")
        if status in ("pass", "skipped"):
            continue
        if item in degraded:
            if environment == LAB:
                continue
            return (f"not injecting: pre_test {item} is declared degraded ({DEGRADED_KEY}), "
                    f"allowed in the lab only, not in environment {environment!r}")
        return f"not injecting: pre_test {item}: {(ob or {}).get('observed') or 'not observed before the fault'}"
    return None


def refusal_of_observations(s: Any, configuration: Mapping[str, Any] | None) -> str | None:
    """The gate's verdict on what session `s` observed so far (for a run stopped before its method, e.g. by a
    failed steady-state probe): the refusal line when an observed pre_test item failed, else None."""
    failed = {k: v for k, v in s.observations.items() if k in pre_test_items(s.plan) and v.get("status") == "fail"}
    if not failed:
        return None
    env = str((configuration or {}).get("drill_environment") or LAB)
    return gate_refusal(tuple(failed), failed, degraded_items(s.plan, configuration, s.config), env)


def require_pre_test(s: Any, configuration: Mapping[str, Any] | None) -> None:
    """The gate before a run's first fault: pre_test items not yet observed are observed now (one measurement per
    item and run, shared with the steady-state probes), then SafetyRefusal unless every item holds or is
    declared degraded in the lab. Records a `check` event either way."""
    from harness.drill import actions

    if s.plan is None or s.fault_t is not None:
        return
    items = pre_test_items(s.plan)
    missing = [i for i in items if i not in s.observations]
    if missing:
        actions.observe_pre_test(missing, configuration=dict(configuration or {}))
    env = str((configuration or {}).get("drill_environment") or LAB)
    degraded = degraded_items(s.plan, configuration, s.config)
    reason = gate_refusal(items, s.observations, degraded, env)
    evidence = {i: s.observations.get(i, {}).get("status") for i in items}
    if reason is not None:
        s.event("check", "pre-fault gate refused", status="fail", reason=reason, evidence=evidence)
        raise SafetyRefusal(reason)
    held = sorted(i for i in degraded if s.observations.get(i, {}).get("status") == "fail")
    if held:
        s.note(f"pre_test degraded by the scenario (lab only): {', '.join(held)}")
    s.event("check", "pre-fault gate passed", status="pass", evidence=evidence, degraded=held)
