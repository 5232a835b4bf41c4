"""Unit tests of the region router's pure logic: target health state machine, failover choice, flips, TTL."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError, HarnessError
from harness.lab.router.logic import (
    MODE_AUTO,
    MODE_MANUAL,
    RegionState,
    RouterConfig,
    RoutingTable,
    Status,
    TargetHealth,
    UnknownRegion,
    choose_region,
)

P1, P2, D1 = "http://127.0.0.1:1001", "http://127.0.0.1:1002", "http://127.0.0.1:2001"


def config(primary=(P1, P2), dr=(D1,), threshold=3, ttl=0.0, secondary=True):
    regions = {"primary": {"role": "PRIMARY", "targets": list(primary)}}
    if secondary:
        regions["dr"] = {"role": "SECONDARY", "targets": list(dr)}
    return RouterConfig.from_json(
        {"regions": regions, "health_check": {"interval_s": 1.0, "failure_threshold": threshold, "timeout_s": 0.5}, "ttl_s": ttl}
    )


def observe_all(table: RoutingTable, region: str, ok: bool, now: float, times: int = 1):
    flips = []
    for i in range(times):
        for t in list(table.regions[region].targets):
            f = table.observe(region, t.url, ok, now + i)
            if f:
                flips.append(f)
    return flips


# ------------------------------------------------------------------ health state machine


def test_unknown_target_becomes_healthy_on_first_success():
    t = TargetHealth(P1)
    assert t.status is Status.UNKNOWN and not t.healthy
    assert t.observe(True, 3) is True
    assert t.healthy and t.consecutive_successes == 1


def test_unknown_target_becomes_unhealthy_after_threshold_failures():
    t = TargetHealth(P1)
    assert [t.observe(False, 3) for _ in range(3)] == [False, False, True]
    assert t.status is Status.UNHEALTHY and t.consecutive_failures == 3


def test_healthy_target_needs_threshold_consecutive_failures():
    t = TargetHealth(P1)
    t.observe(True, 3)
    t.observe(False, 3)
    t.observe(False, 3)
    t.observe(True, 3)  # resets the failure streak
    t.observe(False, 3)
    t.observe(False, 3)
    assert t.healthy
    assert t.observe(False, 3) is True
    assert t.status is Status.UNHEALTHY


def test_unhealthy_target_needs_threshold_consecutive_successes():
    t = TargetHealth(P1)
    for _ in range(3):
        t.observe(False, 3, error="HTTP 503")
    assert t.last_error == "HTTP 503"
    t.observe(True, 3)
    t.observe(True, 3)
    assert not t.healthy
    t.observe(True, 3)
    assert t.healthy and t.last_error is None


def test_threshold_one_flips_on_each_result():
    t = TargetHealth(P1)
    t.observe(True, 1)
    assert t.observe(False, 1) and not t.healthy
    assert t.observe(True, 1) and t.healthy


# ------------------------------------------------------------------ routing choice


def region(name, role, *statuses):
    return RegionState(name, role, [TargetHealth(f"http://h:{i}", status=s) for i, s in enumerate(statuses)])


@pytest.mark.parametrize(
    ("primary", "secondary", "expected"),
    [
        ((Status.HEALTHY,), (Status.HEALTHY,), "primary"),
        ((Status.UNHEALTHY, Status.HEALTHY), (Status.HEALTHY,), "primary"),  # one healthy target is enough
        ((Status.UNHEALTHY,), (Status.HEALTHY,), "dr"),
        ((Status.UNKNOWN,), (Status.HEALTHY,), "dr"),
        ((Status.UNHEALTHY,), (Status.UNHEALTHY,), "primary"),  # all unhealthy: Route 53 answers primary
        ((Status.UNHEALTHY,), (), "primary"),  # a secondary without targets is unhealthy
    ],
)
def test_choose_region(primary, secondary, expected):
    choice, why = choose_region([region("primary", "PRIMARY", *primary), region("dr", "SECONDARY", *secondary)])
    assert choice == expected
    assert why


def test_choose_region_without_secondary():
    assert choose_region([region("primary", "PRIMARY", Status.UNHEALTHY)])[0] == "primary"


# ------------------------------------------------------------------ routing table


def test_failover_and_failback_are_recorded():
    table = RoutingTable(config(), now=0.0)
    observe_all(table, "primary", True, 1.0)
    observe_all(table, "dr", True, 1.0)
    assert table.active == "primary" and table.flips == []

    flips = observe_all(table, "primary", False, 2.0, times=3)
    assert [(f.from_region, f.to_region) for f in flips] == [("primary", "dr")]
    assert flips[0].at == 4.0  # the third failure, decided when it was seen
    assert "primary unhealthy" in flips[0].reason
    assert table.route(4.0)[0] == "dr"

    flips = observe_all(table, "primary", True, 10.0, times=3)
    assert [(f.from_region, f.to_region) for f in flips] == [("dr", "primary")]
    assert flips[0].reason.startswith("failback")
    assert [f.to_json()["to"] for f in table.flips] == ["dr", "primary"]


def test_no_flip_to_unhealthy_secondary():
    table = RoutingTable(config(dr=()), now=0.0)
    observe_all(table, "primary", True, 1.0)
    assert observe_all(table, "primary", False, 2.0, times=5) == []
    region_name, targets = table.route(10.0)
    assert region_name == "primary" and targets == []


def test_flip_back_to_primary_when_everything_is_unhealthy():
    table = RoutingTable(config(threshold=1), now=0.0)
    observe_all(table, "dr", True, 1.0)
    observe_all(table, "primary", False, 1.0)
    assert table.active == "dr"
    flip = observe_all(table, "dr", False, 2.0)[0]
    assert (flip.to_region, table.active) == ("primary", "primary")
    assert "all regions unhealthy" in flip.reason


def test_round_robin_over_healthy_targets_only():
    table = RoutingTable(config(primary=(P1, P2, "http://127.0.0.1:1003"), threshold=1), now=0.0)
    observe_all(table, "primary", True, 1.0)
    table.observe("primary", P2, False, 2.0)
    seen = [table.route(3.0)[1] for _ in range(4)]
    assert [s[0] for s in seen] == [P1, "http://127.0.0.1:1003", P1, "http://127.0.0.1:1003"]
    assert all(P2 not in s and len(s) == 2 for s in seen)


def test_manual_flip_pins_region_until_override_is_cleared():
    table = RoutingTable(config(), now=0.0)
    observe_all(table, "primary", True, 1.0)
    observe_all(table, "dr", True, 1.0)
    flip = table.set_manual("dr", 2.0)
    assert flip is not None and flip.mode == MODE_MANUAL and table.mode == MODE_MANUAL
    assert table.route(2.0)[0] == "dr"
    # health does not move a manual choice
    assert observe_all(table, "dr", False, 3.0, times=3) == []
    assert table.active == "dr"
    flip = table.clear_override(10.0)
    assert table.mode == MODE_AUTO
    assert flip is not None and flip.to_region == "primary" and flip.reason.startswith("override cleared")


def test_manual_flip_to_unknown_region_is_refused():
    table = RoutingTable(config(), now=0.0)
    with pytest.raises(UnknownRegion) as e:
        table.set_manual("mars", 1.0)
    assert isinstance(e.value, HarnessError) and "mars" in str(e.value)


def test_ttl_delays_traffic_but_records_the_flip_at_decision_time():
    table = RoutingTable(config(threshold=1, ttl=5.0), now=0.0)
    observe_all(table, "primary", True, 1.0)
    observe_all(table, "dr", True, 1.0)
    flip = observe_all(table, "primary", False, 10.0)[0]
    assert flip.at == 10.0 and flip.effective_at == 15.0
    assert table.active == "dr"
    assert table.route(14.9)[0] == "primary"
    assert table.snapshot(14.9)["pending"]["region"] == "dr"
    assert table.route(15.0)[0] == "dr"
    assert table.snapshot(15.0)["pending"] is None


def test_ttl_flip_back_before_effective_cancels_pending():
    table = RoutingTable(config(threshold=1, ttl=5.0), now=0.0)
    observe_all(table, "primary", True, 1.0)
    observe_all(table, "dr", True, 1.0)
    observe_all(table, "primary", False, 10.0)
    observe_all(table, "primary", True, 11.0)
    assert [f.to_region for f in table.flips] == ["dr", "primary"]
    assert table.route(12.0)[0] == "primary" and table.route(20.0)[0] == "primary"


def test_set_targets_keeps_known_health_and_starts_new_ones_unknown():
    table = RoutingTable(config(), now=0.0)
    observe_all(table, "primary", True, 1.0)
    observe_all(table, "dr", True, 1.0)
    table.set_targets("primary", [P2, "http://127.0.0.1:1009/"], 2.0)
    targets = table.regions["primary"].targets
    assert [t.url for t in targets] == [P2, "http://127.0.0.1:1009"]
    assert targets[0].healthy and targets[1].status is Status.UNKNOWN


def test_set_targets_to_empty_primary_fails_over():
    table = RoutingTable(config(), now=0.0)
    observe_all(table, "primary", True, 1.0)
    observe_all(table, "dr", True, 1.0)
    flip = table.set_targets("primary", [], 2.0)
    assert flip is not None and flip.to_region == "dr"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"regions": {"a": {"role": "SECONDARY", "targets": []}}},
        {"regions": {"a": {"role": "PRIMARY", "targets": []}, "b": {"role": "PRIMARY", "targets": []}}},
        {"regions": {"a": {"role": "LEADER", "targets": []}}},
        {"regions": {"a": {"role": "PRIMARY", "targets": ["ftp://x"]}}},
        {"regions": {"a": {"role": "PRIMARY", "targets": "http://x:1"}}},
        {"regions": {"a": {"role": "PRIMARY", "targets": []}}, "health_check": {"failure_threshold": 0}},
        {"regions": {"a": {"role": "PRIMARY", "targets": []}}, "health_check": {"interval_s": "fast"}},
        {"regions": {"a": {"role": "PRIMARY", "targets": []}}, "ttl_s": -1},
    ],
)
def test_bad_config_is_refused_with_a_config_error(bad):
    with pytest.raises(ConfigError):
        RouterConfig.from_json(bad)


def test_snapshot_has_the_documented_shape():
    table = RoutingTable(config(), now=0.0)
    observe_all(table, "primary", True, 1.0)
    snap = table.snapshot(2.0)
    assert {"active_region", "mode", "regions", "flips", "health_check", "ttl_s"} <= set(snap)
    assert snap["mode"] == MODE_AUTO
    target = snap["regions"]["primary"]["targets"][0]
    assert {"url", "healthy", "consecutive_failures", "consecutive_successes"} <= set(target)
    assert snap["regions"]["primary"]["role"] == "PRIMARY" and snap["regions"]["primary"]["healthy"] is True


def test_first_round_applied_together_does_not_flip_on_arrival_order():
    table = RoutingTable(config(primary=(P1,)), now=0.0)
    assert table.observe_many([("dr", D1, True, None), ("primary", P1, True, None)], 1.0) is None
    assert table.active == "primary" and table.flips == []
    # one by one, the secondary's answer arriving first would have flipped
    other = RoutingTable(config(primary=(P1,)), now=0.0)
    assert other.observe("dr", D1, True, 1.0) is not None
