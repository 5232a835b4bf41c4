"""Objectives by priority class and customer tier; the plan's business functions probed or marked not modelled."""

import pytest

from harness.config import load_plan
from harness.core import measure
from harness.core.functions import MODELLED, business_functions

H, M = 3600.0, 60.0


@pytest.fixture(scope="module")
def plan():
    return load_plan()


def test_each_service_is_judged_on_the_tightest_of_its_own_and_its_priority_class(plan):
    v = measure.service_targets(plan, "voucher-service")
    assert (v["rto_target_s"], v["rpo_target_s"], v["rto_from"]) == (120 * M, 60 * M, "service")
    assert (v["priority_rto_s"], v["priority_rpo_s"]) == (8 * H, 4 * H)  # P2
    over = load_plan(overrides={"services": {"authentication": {"rto": "9h", "rpo": "5h"}}})
    a = measure.service_targets(over, "authentication")
    assert (a["rto_target_s"], a["rpo_target_s"], a["rto_from"], a["rpo_from"]) == (4 * H, 1 * H, "priority P1",
                                                                                     "priority P1")


def test_tier_platinum_tightens_every_target(plan):
    plain = {o.service: o for o in measure.objective_results(plan, [], catalog=[s.name for s in plan.services])}
    plat = {o.service: o for o in measure.objective_results(plan, [], tier="platinum",
                                                             catalog=[s.name for s in plan.services])}
    assert plain["tax-invoice-service"].rto_target_s == 180 * M and plat["tax-invoice-service"].rto_target_s == 1 * H
    assert plain["voucher-service"].rpo_target_s == 60 * M and plat["voucher-service"].rpo_target_s == 15 * M
    assert plat["voucher-service"].to_dict()["targets"]["rto_from"] == "tier platinum"
    silver = measure.service_targets(plan, "voucher-service", "silver")
    assert silver["rto_target_s"] == 120 * M  # silver (8h) is looser than the service's own target


def test_business_functions_probed_or_not_modelled(plan):
    objectives = [{"service": "authentication", "measured": True, "rto_measured_s": 3.0, "rpo_measured_s": 0.0},
                  {"service": "voucher-service", "measured": True, "rto_measured_s": 2 * H, "rpo_measured_s": 0.0},
                  {"service": "tax-invoice-service", "measured": False}]
    fns = {f["function"]: f for f in business_functions(plan, objectives)}
    assert set(fns) == {fn for p in plan.priorities for fn in p.functions}
    assert fns["authentication and authorization"]["status"] == "probed" and fns["authentication and authorization"]["met"]
    assert fns["voucher lookup"]["met"] is True  # 2 h within P1's 4 h
    assert fns["tax invoice issuing"]["status"] == "not_measured"
    assert fns["ledger lookup"]["status"] == "not_modelled" and fns["ledger lookup"]["met"] is None
    assert {f for f, x in fns.items() if x["status"] != "not_modelled"} == set(MODELLED)
    plat = {f["function"]: f for f in business_functions(plan, objectives, "platinum")}
    assert plat["voucher lookup"]["rto_target_s"] == 1 * H and plat["voucher lookup"]["met"] is False
