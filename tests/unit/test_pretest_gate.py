"""The pre-fault gate's decision (no I/O): which pre_test item refuses the first fault, and degraded items."""

from __future__ import annotations

import pytest

from harness.config import load_plan
from harness.drill import pretest
from harness.errors import UsageError

PLAN = load_plan()
ITEMS = pretest.pre_test_items(PLAN)


def obs(**status: str) -> dict:
    return {k: {"status": v, "observed": f"{k} observed {v}"} for k, v in status.items()}


def test_the_plan_has_the_three_pre_test_items():
    assert ITEMS == ("backups_recent", "replica_lag", "dr_cluster_ready")


def test_every_item_holding_lets_the_fault_through():
    assert pretest.gate_refusal(ITEMS, obs(backups_recent="pass", replica_lag="pass", dr_cluster_ready="pass"),
                                (), "lab") is None


def test_the_first_failing_item_is_named_with_what_was_observed():
    why = pretest.gate_refusal(ITEMS, obs(backups_recent="pass", replica_lag="fail", dr_cluster_ready="fail"),
                               (), "lab")
    assert why == "not injecting: pre_test replica_lag: replica_lag observed fail"


def test_an_item_never_observed_does_not_hold():
    why = pretest.gate_refusal(ITEMS, obs(backups_recent="pass", replica_lag="pass"), (), "lab")
    assert why == "not injecting: pre_test dr_cluster_ready: not observed before the fault"


def test_a_degraded_item_passes_in_the_lab_only():
    seen = obs(backups_recent="pass", replica_lag="fail", dr_cluster_ready="pass")
    assert pretest.gate_refusal(ITEMS, seen, {"replica_lag"}, "lab") is None
    why = pretest.gate_refusal(ITEMS, seen, {"replica_lag"}, "staging")
    assert why.startswith("not injecting: pre_test replica_lag is declared degraded") and "'staging'" in why


def test_degraded_items_come_from_any_configuration_and_must_be_pre_test_items():
    assert pretest.degraded_items(PLAN, {"drill_degraded_pre_test": ["replica_lag"]}, None) == {"replica_lag"}
    assert pretest.degraded_items(PLAN, {"drill_degraded_pre_test": "replica_lag, backups_recent"}) == \
        {"replica_lag", "backups_recent"}
    with pytest.raises(UsageError, match="'failback' is not a pre_test item"):
        pretest.degraded_items(PLAN, {"drill_degraded_pre_test": ["failback"]})
    with pytest.raises(UsageError, match="must be a list"):
        pretest.degraded_items(PLAN, {"drill_degraded_pre_test": 3})
