"""The failover policy's pure core: the plan's seven conditions as rules on the drill clock, firing after the duration,
not firing when the condition recovers first, and a second failover inside the cooldown refused with its clear time."""

import pytest

from harness.config import load_plan
from harness.core import policy
from harness.core.plan import PlanError


@pytest.fixture(scope="module")
def plan():
    return load_plan()


def engine(plan, scale=0.01, **kw):
    return policy.PolicyEngine.for_plan(plan, scale, **kw)


def test_the_plans_seven_conditions_on_the_drill_clock(plan):
    rules = {r.name: r for r in policy.rules(plan, 0.01)}
    assert list(rules) == ["replication_lag_alert", "replication_lag_promote_replica", "connection_failure",
                           "node_not_ready", "api_server_unreachable", "error_rate", "latency_p99"]
    lag = rules["replication_lag_promote_replica"]
    assert (lag.threshold, lag.drill_threshold, lag.action) == (600.0, 6.0, "promote_replica")
    assert (rules["error_rate"].duration_s, rules["error_rate"].drill_duration_s) == (300.0, 3.0)
    assert rules["node_not_ready"].drill_threshold == 2 and rules["latency_p99"].drill_threshold == 5.0
    over = {r.name: r for r in policy.rules(plan, 0.01, {"latency_p99": {"threshold": 0.4}})}
    assert over["latency_p99"].drill_threshold == 0.4 and over["latency_p99"].threshold == 5.0
    with pytest.raises(PlanError, match="unknown failover rule 'p42'"):
        policy.rules(plan, 0.01, {"p42": {"threshold": 1}})


def test_fires_once_after_the_duration_and_not_when_it_recovers_first(plan):
    e = engine(plan)
    assert e.observe(0.0, {"error_rate": 0.9}) == []
    assert e.observe(2.0, {"error_rate": 0.8}) == []
    (d,) = e.observe(3.1, {"error_rate": 0.7})
    assert (d.rule, d.outcome, d.action, d.measured, d.threshold, d.peak) == ("error_rate", "fired", "rollback", 0.7,
                                                                              0.5, 0.9)
    assert d.held_s == pytest.approx(3.1) and e.observe(4.0, {"error_rate": 0.9}) == []  # once per breach
    assert e.observe(5.0, {"error_rate": 0.1}) == []  # the end of a fired breach is no decision
    e.observe(6.0, {"error_rate": 0.6})
    (nf,) = e.observe(7.5, {"error_rate": 0.2})
    assert (nf.outcome, nf.held_s, nf.measured) == ("not_fired", 0.0, 0.2) and "before its duration 3s" in nf.reason
    assert e.observe(8.0, {"error_rate": 0.5}) == []  # not beyond 50 %


def test_thresholds_without_duration_fire_at_once(plan):
    e = engine(plan)
    assert e.observe(0.0, {"replication_lag": 2.9}) == []
    (alert,) = e.observe(0.5, {"replication_lag": 3.4})
    assert (alert.rule, alert.action, alert.outcome) == ("replication_lag_alert", "alert", "fired")
    (promote,) = e.observe(3.5, {"replication_lag": 6.2})
    assert promote.rule == "replication_lag_promote_replica" and promote.measured == 6.2


def test_second_failover_inside_the_cooldown_is_refused_with_the_time_it_clears(plan):
    e = engine(plan)  # database_failover 1 h -> 36 s on the drill clock
    fired = e.observe(100.0, {"replication_lag": 7.0})  # both lag rules fire at once (no duration)
    assert [d.rule for d in fired] == ["replication_lag_alert", "replication_lag_promote_replica"]
    promote = fired[1]
    e.acted(promote)
    e.observe(110.0, {"connection_failure": True})
    (d,) = e.observe(110.7, {"connection_failure": True})
    assert (d.rule, d.action, d.outcome) == ("connection_failure", "promote_replica", "refused")
    assert d.clears_at == pytest.approx(promote.t + 36.0)
    assert "cooldown database_failover (1h, 36s on the drill clock)" in d.reason and "clears in 25" in d.reason
    later = engine(plan)
    later.history.extend(e.history)
    later.observe(140.0, {"connection_failure": True})
    (ok,) = later.observe(140.7, {"connection_failure": True})
    assert ok.outcome == "fired"  # after the cooldown the same failover goes ahead


def test_report_md_shows_level_escalation_and_decisions():
    from harness.report.markdown import render_markdown

    report = {"run_id": "r", "kind": "monthly-chaos", "status": "passed", "exit_code": 0, "objectives": [],
              "detector": {"max_level": 4, "max_level_name": "catastrophic", "expected_level": 3,
                           "expected_level_name": "major", "match": False, "note": "weight 35"},
              "escalation": {"time_scale": 0.01, "steps": [{"level": 1, "who": "On-Call Engineer", "plan_offset_s": 0,
                                                             "drill_offset_s": 0, "reason": "opened"}],
                             "decisions": [{"gate": "dr_region_switch", "level": 3, "who": "CTO", "plan_s": 3600,
                                            "drill_s": 36, "approved_by": "Kim"}],
                             "rto": [{"service": "authentication", "rto_s": 3.0, "rto_with_decision_s": 3603.0,
                                      "rto_with_decision_drill_s": 39.0}]},
              "decisions": [{"rule": "error_rate", "measured": 1.0, "threshold": 0.5, "held_s": 3.2,
                             "drill_duration_s": 3.0, "action": "rollback", "outcome": "fired", "reason": "held"}]}
    md = render_markdown(report)
    assert "Highest level 4 (catastrophic), the scenario's level 3 (major): MISMATCH." in md
    assert "| L1 | On-Call Engineer |" in md and "approved by Kim" in md and "| authentication | 3s | 1h3s | 39s |" in md
    assert "| error_rate | 1.0 | 0.5 | 3.2s / 3s | rollback | fired | held |" in md
