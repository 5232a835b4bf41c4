"""Steps of the region-level catalog drills: a region lost while the DR replica lags, a partition between the regions,
a long power outage. The plan's checklist wording; the shared steps (backup, workload, failover, failback, objectives)
are those of steps/region_failover.py."""

from __future__ import annotations

import time

from pytest_bdd import parsers, then, when

from harness.core import measure
from harness.drill import regional
from harness.failover.partition import heal_partition, partition_regions, refuse_split_brain
from harness.failover.rejoin import rejoin_region
from harness.safety import guard
from harness.targets import _lab
from harness.targets.postgres import ops as pg_ops
from harness.targets.toxiproxy import actions as toxiproxy

from .timing import poll, scaled


def _require_gates(drill, drill_configuration, activities: tuple[str, ...], name: str) -> None:
    gates = [g for ref in activities for g in guard.gates_for_activity(ref, drill.plan)]
    guard.require_gates(gates, drill_configuration, name=name)  # before the first fault


# --- region loss while the DR replica lags ------------------------------------------------------------
@when(parsers.parse("the WAL stream to the DR standby is held for {seconds:d} seconds under load"))
def wal_stream_held(drill, drill_configuration, seconds: int):
    _require_gates(drill, drill_configuration, ("harness.failover.region:fail_region",
                                                "harness.failover.runbook:fail_over"), "lagging replica drill")
    regional.await_replicated_baseline(timeout_s=scaled(60), configuration=drill_configuration)
    toxiproxy.hold_link(proxy="pg_replication", configuration=drill_configuration)
    time.sleep(seconds)


@then("the DR standby is behind the primary")
def standby_behind(drill, drill_configuration):
    obs = regional.measure_replica_behind(min_behind_bytes=1, configuration=drill_configuration)
    assert obs["not_received_bytes"] > 0, obs


@when("the held WAL stream is released")
def wal_stream_released(drill, drill_configuration):
    toxiproxy.release_link(proxy="pg_replication", configuration=drill_configuration)


@then("the acknowledged writes lost are measured exactly and above zero")
def lost_measured_exactly(drill):
    lost = regional.lost_vouchers(drill)
    counts = measure.write_counts(drill.timeline.ops, drill.final_keys)
    rpo = measure.rpo(drill.timeline.ops, drill.final_keys, drill.fault_t)
    assert lost and counts.lost == len(lost) == rpo.lost, (len(lost), counts.lost, rpo.lost)
    assert rpo.rpo_s > 0 and not rpo.lower_bound, rpo


@then("the lost writes are kept aside with the old primary's data")
def lost_writes_kept_aside(drill, drill_configuration):
    out = regional.check_kept_aside(region="primary", configuration=drill_configuration)
    assert out["dropped"] == 0 and out["in_kept_aside"] + out["on_primary"] == out["lost"], out


# --- partition between the regions --------------------------------------------------------------------
@when("the network between the regions is cut")
def regions_partitioned(drill, drill_configuration):
    _require_gates(drill, drill_configuration, ("harness.failover.runbook:fail_over",), "partition drill")
    partition_regions(configuration=drill_configuration)


@then(parsers.parse("the runbook refuses to fail over while the primary region serves, for {seconds:d} seconds"))
def split_brain_refused(drill, drill_configuration, seconds: int):
    out = refuse_split_brain(window_s=seconds, detect_timeout_s=max(1, seconds - 1), configuration=drill_configuration)
    assert out["refused"] and out["roles"]["both_writable"] == 0, out


@when("the partition heals", target_fixture="healed")
def partition_heals(drill, drill_configuration):
    return heal_partition(catch_up_timeout_s=scaled(30), configuration=drill_configuration)


@then("replication to the DR region resumes")
def replication_resumes(healed):
    assert healed["resumed"], healed


@then("every acknowledged voucher was written in the primary region")
def written_in_primary(drill, drill_configuration):
    regional.writes_served_by_one_region(region="primary", configuration=drill_configuration)


@then("the lab is as it was found")
def lab_as_found(drill, drill_configuration):
    regional.require_lab_as_found(region="primary", configuration=drill_configuration)


# --- long power outage --------------------------------------------------------------------------------
@when(parsers.parse("the DR region runs alone for {seconds:d} seconds"), target_fixture="alone")
def dr_runs_alone(drill, drill_configuration, seconds: int):
    return regional.run_alone(seconds=seconds, region="dr", configuration=drill_configuration)


@then("the DR region served every write while the primary region stayed down")
def dr_served_alone(alone):
    assert set(alone["acknowledged_by_region"]) == {"dr"}, alone


@when("the primary region returns as the standby of the DR region", target_fixture="rejoined")
def primary_returns_as_standby(drill, drill_configuration):
    return rejoin_region(region="primary", catch_up_timeout_s=scaled(60), configuration=drill_configuration)


@then(parsers.parse("replication to the primary region catches up after {seconds:d} seconds"))
def primary_caught_up(drill_lab, rejoined, seconds: int):
    t = _lab.resolve({"drill_state_dir": str(drill_lab.state)})

    def streaming() -> bool:
        with t.pg("primary", timeout=1) as c:
            return pg_ops.in_recovery(c) and pg_ops.streaming_from(c, t.pg_stream_port("dr", "primary"))

    poll(streaming, seconds, "the primary region's database streaming from DR")
    assert rejoined["replay_lag_s"] is not None, rejoined
