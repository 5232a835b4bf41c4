"""The escalation matrix on the drill clock, the decision time of a gate, RTO with and without it; --approve GATE=WHO."""

import pytest

from harness.config import load_plan
from harness.core import escalation
from harness.core.plan import PlanError
from harness.drill.runner import split_approvals
from harness.errors import UsageError


@pytest.fixture(scope="module")
def plan():
    return load_plan()


def test_matrix_calls_each_level_at_the_previous_levels_trigger_time(plan):
    # L1 "not resolved within 30 minutes" -> L2 at 30 min, L2 "... within 1 hour" -> L3 at 1 h; L3's triggers name no
    # time (the outage persists) -> L4 once L3 has had its response time (1 h): 2 h. On the drill clock x 0.01.
    clock = escalation.EscalationClock.for_plan(plan, scale=0.01)
    assert clock.observe(100.0, 0) == []
    first = clock.observe(101.0, 3)
    assert [(s.level, s.who, s.t) for s in first] == [(1, "On-Call Engineer", 101.0)]
    assert clock.observe(118.0, 3) == []  # 30 min are 18 s
    second = clock.observe(119.5, 3)
    assert [(s.level, s.who, s.plan_offset_s, s.drill_offset_s) for s in second] == [(2, "DevOps Lead", 1800.0, 18.0)]
    assert "not resolved within On-Call Engineer's 30 min" in second[0].reason
    late = clock.observe(300.0, 2)  # a late tick calls every level that became due, at its own time
    assert [(s.level, s.t) for s in late] == [(3, 101.0 + 36.0), (4, 101.0 + 72.0)]
    assert "persists" in late[1].reason
    assert clock.observe(301.0, 0) == [] and clock.observe(302.0, 1)[0].incident == 2  # closed, then a new one


def test_the_clock_and_the_notifications_read_the_matrix_alike(plan):
    from harness.report.notify import escalation_steps

    offsets = [c.offset_s for c in escalation.schedule(plan.escalation)]
    assert offsets == [0.0, 1800.0, 3600.0, 7200.0]
    report = {"timeline": [], "objectives": []}
    assert [s["call_at_s"] for s in escalation_steps(plan, report)] == offsets


def test_an_incident_resolved_within_l1s_time_calls_only_l1(plan):
    clock = escalation.EscalationClock.for_plan(plan, scale=0.01)
    assert len(clock.observe(0.0, 3)) == 1 and clock.observe(5.0, 0) == [] and clock.observe(20.0, 0) == []
    assert [s.level for s in clock.called] == [1]


def test_decision_time_of_a_gate_is_the_approving_levels_response_time(plan):
    d = escalation.decision(plan, "dr_region_switch", 0.01)
    assert (d["level"], d["who"], d["plan_s"], d["drill_s"]) == (3, "CTO / Engineering Director", 3600.0, 36.0)
    rows = escalation.rto_with_decisions([("authentication", 3.2), ("voucher-service", None)], [d], 0.01)
    assert rows[0] == {"service": "authentication", "rto_s": 3.2, "decision_s": 3600.0,
                       "rto_with_decision_s": 3603.2, "rto_with_decision_drill_s": 39.2}
    assert rows[1]["rto_with_decision_s"] is None
    with pytest.raises(PlanError, match="gate 'nope'"):
        escalation.decision(plan, "nope")


def test_time_scale_bounds():
    assert escalation.time_scale(None) == escalation.DEFAULT_TIME_SCALE
    assert escalation.time_scale("0.5") == 0.5
    for bad in (0, 2, "x", True):
        with pytest.raises(PlanError, match="drill_time_scale"):
            escalation.time_scale(bad)


def test_approve_gate_equals_who():
    assert split_approvals(("dr_region_switch=Kim (CTO)", "data_restore_from_backup")) == (
        ("dr_region_switch", "data_restore_from_backup"), {"dr_region_switch": "Kim (CTO)"})
    with pytest.raises(UsageError, match="no approver after '='"):
        split_approvals(("dr_region_switch=",))


def test_validate_names_bad_automation_keys():
    from harness.drill.validate import drill_configuration_problems

    assert drill_configuration_problems({"drill_time_scale": 0.01, "drill_expected_level": "region failure",
                                         "drill_tier": "gold", "drill_detector_interval_s": 0}) == []
    bad = drill_configuration_problems({"drill_time_scale": 5, "drill_expected_level": 9, "drill_tier": "bronze",
                                        "drill_detector_interval_s": -1})
    assert [p.split(":")[0] for p in bad] == ["configuration.drill_time_scale", "configuration.drill_expected_level",
                                              "configuration.drill_tier", "configuration.drill_detector_interval_s"]
