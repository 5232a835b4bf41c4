"""Unit tests of the safety guard chain and the disaster-level decision."""

import pytest

from harness.config import load_plan
from harness.core.plan import PlanError
from harness.core.safety import (Activation, PlannedFault, SafetyContext, cooldown_remaining, decide,
                                 plan_disaster_level)

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def plan():
    return load_plan()


def ctx(plan, **kw):
    kw.setdefault("now", NOW)
    return SafetyContext.from_plan(plan, **kw)


def kill_primary(plan):
    return PlannedFault.for_plan(plan, "kill-primary-db", "promote_replica", target="postgres",
                                 regions=["primary"], components=["postgres"])


def switch(plan):
    return PlannedFault.for_plan(plan, "region-switch", "switch_region", regions=["primary", "dr"], components=["router"])


def test_lab_allowed_without_config(plan):
    d = decide(kill_primary(plan), ctx(plan))
    assert d.allowed and d.outcome == "inject" and not d.refused


def test_environment_allow_list(plan):
    d = decide(kill_primary(plan), ctx(plan, environment="staging"))
    assert not d.allowed and d.refused and d.guard == "environment"
    assert d.reason.startswith("not injecting: ") and "'staging'" in d.reason
    assert decide(kill_primary(plan), ctx(plan, environment="staging", allowed_environments={"staging"})).allowed


def test_gate_needs_approval(plan):
    f = switch(plan)
    assert f.gates == ("dr_region_switch",) and f.cooldowns == ("dr_activation",)
    d = decide(f, ctx(plan))
    assert d.refused and d.guard == "approval" and "--approve dr_region_switch" in d.reason
    assert d.reason.startswith("not injecting: ")
    assert decide(f, ctx(plan, approved_gates={"dr_region_switch"})).allowed


def test_unknown_gate(plan):
    f = PlannedFault("x", "custom", gates=("launch_missiles",))
    d = decide(f, ctx(plan, approved_gates={"launch_missiles"}))
    assert d.refused and "unknown approval gate 'launch_missiles'" in d.reason


def test_blast_radius(plan):
    f = switch(plan)
    d = decide(f, ctx(plan, approved_gates={"dr_region_switch"}, max_regions=1))
    assert d.refused and d.guard == "blast_radius" and "2 regions" in d.reason
    d = decide(kill_primary(plan), ctx(plan, max_components=0))
    assert d.refused and "1 components" in d.reason and d.reason.startswith("not injecting: ")


def test_dry_run_is_not_a_refusal_but_refusals_win(plan):
    d = decide(kill_primary(plan), ctx(plan, dry_run=True))
    assert not d.allowed and d.dry_run and not d.refused and d.reason == "dry-run: recorded, not injected"
    d = decide(switch(plan), ctx(plan, dry_run=True))
    assert d.refused and d.reason.startswith("not injecting: ")


def test_cooldowns(plan):
    hist = [Activation("database_failover", NOW - 1800, "prod")]
    prod = dict(environment="prod", allowed_environments={"prod"}, history=hist)
    d = decide(kill_primary(plan), ctx(plan, **prod))
    assert d.refused and d.guard == "cooldown" and d.reason.startswith("not injecting: ")
    assert "cooldown database_failover (1h): last activation 30m ago, wait 30m (until " in d.reason
    assert "\n" not in d.reason
    assert decide(kill_primary(plan), ctx(plan, **{**prod, "now": NOW + 1800})).allowed
    # the lab ignores cooldowns unless told otherwise
    assert decide(kill_primary(plan), ctx(plan, history=hist)).allowed
    assert decide(kill_primary(plan), ctx(plan, history=hist, enforce_cooldowns=True)).refused
    # DR activation: 24 h
    hist = [Activation("dr_activation", NOW - 23 * 3600)]
    d = decide(switch(plan), ctx(plan, history=hist, enforce_cooldowns=True, approved_gates={"dr_region_switch"}))
    assert d.refused and "last activation 23h ago" in d.reason and "wait 1h" in d.reason
    left, last = cooldown_remaining("dr_activation", ctx(plan, history=hist))
    assert left == pytest.approx(3600) and last.t == NOW - 23 * 3600
    with pytest.raises(PlanError):
        cooldown_remaining("nope", ctx(plan))


def test_cooldown_refusal_names_the_run_and_what_it_was(plan):
    hist = [Activation("database_failover", NOW - 720, "lab", "run-1", "promote_standby on postgres:dr"),
            Activation("database_failover", NOW - 3000, "lab", "run-0")]
    d = decide(kill_primary(plan), ctx(plan, history=hist, enforce_cooldowns=True))
    assert d.refused and d.guard == "cooldown"
    assert ("cooldown database_failover (1h): last activation 12m ago (run run-1, promote_standby on postgres:dr), "
            "wait 48m (until ") in d.reason
    # an activation in the future of ctx.now (clock skew) does not count; an unrelated cooldown does not either
    assert decide(kill_primary(plan), ctx(plan, history=[Activation("database_failover", NOW + 60),
                                                         Activation("dr_activation", NOW - 60)],
                                          enforce_cooldowns=True)).allowed


def test_all_reasons_listed(plan):
    d = decide(switch(plan), ctx(plan, environment="prod", max_regions=1))
    assert d.guard == "environment" and len(d.reasons) == 3
    assert all(r.startswith("not injecting: ") for r in d.reasons)
    assert d.to_dict()["outcome"] == "refused"


@pytest.mark.parametrize("failed, level, name", [
    ([], 0, "normal"),
    (["external_apis"], 0, "normal"),                                  # 3
    (["redis_cluster"], 1, "minor"),                                   # 5
    (["database_primary"], 2, "moderate"),                             # 10
    (["database_primary", "database_replica", "redis_cluster"], 3, "major"),  # 20
    (["database_primary", "kubernetes_nodes", "api_health", "external_apis"], 3, "major"),  # 28
    (["database_primary", "kubernetes_nodes", "api_health", "redis_cluster"], 4, "catastrophic"),  # 30
])
def test_disaster_level(plan, failed, level, name):
    healthy = {i.name: i.name not in failed for i in plan.indicators}
    d = plan_disaster_level(plan, healthy)
    assert (d.level, d.name) == (level, name)
    assert set(d.failed) == set(failed)


def test_disaster_level_unknown_states(plan):
    d = plan_disaster_level(plan, {"database_primary": False, "api_health": None})
    assert d.level == 2 and "api_health" in d.unknown and "redis_cluster" in d.unknown
    with pytest.raises(PlanError, match="'disk'"):
        plan_disaster_level(plan, {"disk": False})
