"""Unit tests of the plan model and its loader (plan.yaml, overrides, validation errors)."""

from pathlib import Path

import pytest
import yaml

from harness.config import DEFAULT_PLAN, load_plan, load_plan_dict
from harness.core.plan import Goals, Plan, PlanError, Priority, Service, recovery_order
from harness.errors import ConfigError


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan()


def raw() -> dict:
    return yaml.safe_load(DEFAULT_PLAN.read_text())


def test_priorities(plan):
    assert [(p.name, p.rto_s, p.rpo_s) for p in plan.priorities] == [
        ("P1", 4 * 3600, 3600), ("P2", 8 * 3600, 4 * 3600), ("P3", 24 * 3600, 24 * 3600)]
    assert "authentication and authorization" in plan.priority("P1").functions


def test_tiers(plan):
    assert [(t.name, t.availability, t.rto_s, t.rpo_s, t.dr_mode) for t in plan.tiers] == [
        ("platinum", "99.99%", 3600, 900, "active-active"),
        ("gold", "99.9%", 4 * 3600, 3600, "warm-standby"),
        ("silver", "99.5%", 8 * 3600, 4 * 3600, "pilot-light")]


def test_service_catalog(plan):
    got = {s.name: (s.priority, s.rto_s / 60, s.rpo_s / 60, s.dependencies) for s in plan.services}
    assert got == {
        "authentication": ("P1", 60, 15, ("postgresql", "redis")),
        "api-gateway": ("P1", 60, 0, ("authentication",)),
        "voucher-service": ("P2", 120, 60, ("postgresql", "api-gateway")),
        "tax-invoice-service": ("P2", 180, 60, ("voucher-service", "python-grpc")),
    }
    assert plan.service("authentication").recovery_steps[3] == "Verify JWT signing keys"
    assert plan.recovery_order == ("authentication", "api-gateway", "voucher-service", "tax-invoice-service")
    assert plan.dependents("authentication") == ("api-gateway", "voucher-service", "tax-invoice-service")
    with pytest.raises(PlanError, match="'nope'"):
        plan.service("nope")


def test_levels_detector_failover(plan):
    assert [(d.level, d.name, d.expected_downtime_s, d.min_failed_weight) for d in plan.disaster_levels] == [
        (1, "minor", 300, 5), (2, "moderate", 1800, 10), (3, "major", 4 * 3600, 20), (4, "catastrophic", 86400, 30)]
    assert {i.name: i.weight for i in plan.indicators} == {
        "database_primary": 10, "database_replica": 5, "redis_cluster": 5, "kubernetes_nodes": 8,
        "api_health": 7, "external_apis": 3}
    conds = [(c.type, c.threshold_s, c.duration_s, c.action) for c in plan.failover_conditions]
    assert ("replication_lag", 300, None, "alert") in conds
    assert ("replication_lag", 600, None, "promote_replica") in conds
    assert ("connection_failure", None, 60, "promote_replica") in conds
    assert ("latency_p99", 5, 300, "scale_up") in conds
    err = next(c for c in plan.failover_conditions if c.type == "error_rate")
    assert err.threshold_ratio == 0.5
    assert plan.cooldown("database_failover").duration_s == 3600
    assert plan.cooldown("dr_activation").duration_s == 86400
    assert [g.name for g in plan.gates] == ["dr_region_switch", "data_restore_from_backup", "database_point_in_time_recovery"]
    assert plan.gates_for("switch_region") == ("dr_region_switch",)
    assert plan.cooldowns_for("promote_replica") == ("database_failover",)


def test_backups_tests_checklist_escalation(plan):
    snap = next(b for b in plan.backup_layers if b.name == "snapshot")
    assert snap.component("postgresql").frequency_s == 3600 and snap.component("postgresql").retention_s == 7 * 86400
    assert snap.component("redis").frequency_s == 6 * 3600 and snap.component("redis").retention_s == 3 * 86400
    archive = next(b for b in plan.backup_layers if b.name == "archive")
    assert archive.component("database").retention_s == 10 * 365 * 86400
    assert {t.name: t.frequency for t in plan.test_types} == {
        "tabletop": "quarterly", "simulation": "semiannual", "full": "annual", "chaos": "monthly"}
    assert plan.test_type("monthly-chaos").name == "chaos"
    phases = [(c.phase, c.id) for c in plan.checklist]
    assert phases[:3] == [("pre_test", "backups_recent"), ("pre_test", "replica_lag"), ("pre_test", "dr_cluster_ready")]
    assert len(phases) == 10
    assert plan.checklist_item("replica_lag").threshold_s == 60
    assert plan.checklist_item("rto_measured").threshold_s == 4 * 3600
    assert plan.checklist_item("rpo_measured").threshold_s == 3600
    assert [(e.level, e.response_time_s, e.escalate_to) for e in plan.escalation] == [
        (1, 900, 2), (2, 1800, 3), (3, 3600, 4), (4, 7200, None)]
    assert plan.to_dict()["recovery_order"][0] == "authentication"


def test_override_dict_and_alias(plan):
    p = load_plan(overrides={"services": {"authentication": {"rto_s": 0.001}}})
    assert p.service("authentication").rto_s == 0.001
    assert p.service("api-gateway").rto_s == 3600
    assert plan.service("authentication").rto_s == 3600  # the base plan is untouched


def test_override_file(tmp_path: Path):
    f = tmp_path / "impossible.yaml"
    f.write_text("services:\n  voucher-service:\n    rpo: 0s\n    rto: 1ms\n")
    p = load_plan(overrides=f)
    assert p.service("voucher-service").rpo_s == 0 and p.service("voucher-service").rto_s == 0.001


def test_override_unknown_service():
    with pytest.raises(ConfigError, match="unknown service 'billing'"):
        load_plan(overrides={"services": {"billing": {"rto": "1h"}}})


def test_override_both_spellings():
    with pytest.raises(ConfigError, match="given twice"):
        load_plan(overrides={"services": {"authentication": {"rto": 1, "rto_s": 2}}})


def test_bad_duration_names_key_and_value():
    with pytest.raises(ConfigError) as ei:
        load_plan(overrides={"services": {"authentication": {"rto": "5x"}}})
    msg = str(ei.value)
    assert "services.authentication.rto" in msg and "'5x'" in msg and "\n" not in msg


def test_unknown_field():
    with pytest.raises(ConfigError, match="services.authentication.colour"):
        load_plan(overrides={"services": {"authentication": {"colour": "red"}}})


def test_unknown_priority_and_dependency():
    d = raw()
    d["services"]["authentication"]["priority"] = "P9"
    with pytest.raises(ConfigError, match="unknown priority 'P9'"):
        load_plan_dict(d)
    d = raw()
    d["services"]["authentication"]["dependencies"].append("mongodb")
    with pytest.raises(ConfigError, match="unknown 'mongodb'"):
        load_plan_dict(d)


def test_dependency_cycle():
    with pytest.raises(ConfigError, match="cycle.*(authentication -> api-gateway -> authentication|api-gateway -> authentication -> api-gateway)"):
        load_plan(overrides={"services": {"authentication": {"dependencies": ["api-gateway"]}}, "recovery_order": []})


def test_declared_order_must_respect_dependencies():
    with pytest.raises(ConfigError, match="before its dependency"):
        load_plan(overrides={"recovery_order": ["api-gateway", "authentication", "voucher-service", "tax-invoice-service"]})
    with pytest.raises(ConfigError, match="every service"):
        load_plan(overrides={"recovery_order": ["authentication"]})


def test_bad_yaml_and_missing_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_plan(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_plan(tmp_path / "none.yaml")
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_plan(f)


def test_bad_percentage():
    with pytest.raises(ConfigError, match="percentage"):
        load_plan(overrides={"failover_conditions": [{"component": "app", "type": "error_rate", "threshold": "150%", "action": "x"}]})


def _svc(name, deps=()):
    return Service(name, "P1", 60, 60, tuple(deps))


def test_recovery_order_is_topological_and_stable():
    services = [_svc("c", ["b"]), _svc("a"), _svc("b", ["a"]), _svc("d")]
    assert recovery_order(services) == ("a", "b", "c", "d")
    assert recovery_order([_svc("x"), _svc("y")]) == ("x", "y")
    with pytest.raises(PlanError, match="cycle.*(a -> b -> a|b -> a -> b)"):
        recovery_order([_svc("a", ["b"]), _svc("b", ["a"])])


def test_plan_built_by_hand_validates():
    goals = Goals(3600, 60, "99.9%")
    prio = (Priority("P1", 1, "", 3600, 60),)
    Plan("t", goals, prio, (), (_svc("a"),))
    with pytest.raises(PlanError, match="duplicate service 'a'"):
        Plan("t", goals, prio, (), (_svc("a"), _svc("a")))
    with pytest.raises(PlanError, match="empty"):
        Plan("t", goals, prio, (), ())
