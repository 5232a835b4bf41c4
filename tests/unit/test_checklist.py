"""Unit tests of checklist evaluation against the plan's checklist."""

import pytest

from harness.config import load_plan
from harness.core.checklist import NOT_OBSERVED, Observation, evaluate, summary, within, worst
from harness.core.plan import PlanError


@pytest.fixture(scope="module")
def plan():
    return load_plan()


def test_unobserved_items_are_skipped(plan):
    res = evaluate(plan.checklist, {})
    assert len(res) == 10
    assert all(r.status == "skipped" and r.observed == NOT_OBSERVED for r in res)
    assert [r.phase for r in res] == ["pre_test"] * 3 + ["during_test"] * 3 + ["post_test"] * 4


def test_observations_in_several_forms(plan):
    obs = {
        "replica_lag": within(0.4, plan.checklist_item("replica_lag").threshold_s, "replica lag"),
        "service_health": {"status": "pass", "observed": "HTTP 200 from dr"},
        "failback": {"ok": False, "observed": "router still on dr"},
        "dr_cluster_ready": {"ok": True, "observed": "dr: 2 slots"},
        "traffic_switched": ("pass", "active_region=dr"),
        "rto_measured": within(worst([2.4, 3.1]), plan.checklist_item("rto_measured").threshold_s, "worst RTO"),
        "rpo_measured": within(worst([0.8, None]), 3600, "worst RPO"),
    }
    res = {r.id: r for r in evaluate(plan.checklist, obs)}
    assert res["replica_lag"].status == "pass" and "0.4s" in res["replica_lag"].observed
    assert res["service_health"].to_dict() == {"phase": "during_test", "id": "service_health",
                                               "item": "service availability",
                                               "expected": "HTTP 200 from /health through the global endpoint",
                                               "observed": "HTTP 200 from dr", "status": "pass"}
    assert res["failback"].status == "fail"
    assert res["traffic_switched"].status == "pass"
    assert res["rto_measured"].status == "pass" and "3.1s" in res["rto_measured"].observed
    assert res["rpo_measured"].status == "fail"
    assert res["dr_cluster_ready"].status == "pass"
    assert summary(res.values()) == {"pass": 5, "fail": 2, "skipped": 3}
    assert within(1, 2, "x").ok and not within(3, 2, "x").ok


def test_threshold_is_strict(plan):
    assert within(60, 60, "lag").status == "fail"
    assert within(59.9, 60, "lag").status == "pass"


def test_unknown_item_and_bad_status(plan):
    with pytest.raises(PlanError, match="'replica_lagg'"):
        evaluate(plan.checklist, {"replica_lagg": True})
    with pytest.raises(PlanError, match="'maybe'"):
        evaluate(plan.checklist, {"replica_lag": {"status": "maybe", "observed": "?"}})
    with pytest.raises(ValueError):
        Observation("ok", "x")
