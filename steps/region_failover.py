"""Steps of the region failover drill: the plan's checklist phrased as Given/When/Then over the real lab."""

from __future__ import annotations

from pytest_bdd import given, parsers, then, when

from harness.drill import actions
from .timing import poll


@given("a recent backup of the primary database exists")
def recent_backup(drill, drill_configuration):
    actions.take_scheduled_backup(configuration=drill_configuration)
    actions.check_pre_test(configuration=drill_configuration)
    assert drill.observations["backups_recent"]["ok"], drill.observations["backups_recent"]["observed"]


@given(parsers.parse("the replication lag of the DR standby is under {seconds:d} seconds"))
def replication_lag_under(drill, seconds: int):
    obs = drill.observations["replica_lag"]
    assert obs["ok"], obs["observed"]


@given("the DR region is ready or scalable")
def dr_ready(drill):
    obs = drill.observations["dr_cluster_ready"]
    assert obs["ok"], obs["observed"]


@given(parsers.parse("{writers:d} ledger writers create vouchers through the global endpoint at {rate:d} writes per second"))
def workload_running(drill, drill_configuration, writers: int, rate: int):
    actions.start_workload(writers=writers, rate_per_s=rate, configuration=drill_configuration)
    poll(lambda: any(e.event == "ok" for e in drill.timeline.of_kind("op")), 10, "the first acknowledged write")


#: what the scenario runs from "When the primary region fails" on: its gates are checked before the fault
SCENARIO_ACTIVITIES = ("harness.failover.region:fail_region", "harness.failover.runbook:fail_over")


@when("the primary region fails")
def primary_region_fails(drill, drill_configuration):
    from harness.safety import guard
    from harness.failover.region import fail_region

    gates = [g for ref in SCENARIO_ACTIVITIES for g in guard.gates_for_activity(ref, drill.plan)]
    guard.require_gates(gates, drill_configuration, name="region failover drill")  # before the first fault
    fail_region(region="primary", configuration=drill_configuration)


@when("the runbook fails over to the DR region")
def runbook_fails_over(drill, drill_configuration):
    from harness.failover.runbook import fail_over

    fail_over(to_region="dr", configuration=drill_configuration)


@then(parsers.parse("every catalog service answers through the global endpoint after {seconds:d} seconds"))
def services_answer(drill, drill_configuration, seconds: int):
    actions.observe_failover(configuration=drill_configuration)
    services = list(drill.workload.probes.services)

    def all_recovered() -> bool:
        return not actions.not_recovered(drill, services, 3)

    poll(all_recovered, seconds, "3 consecutive successful probes of every service")


@when("the workload stops and the final state is read on the new primary")
def workload_stops(drill, drill_configuration):
    actions.stop_workload(recovery_timeout_s=5, configuration=drill_configuration)
    assert drill.final_keys is not None


@then("no acknowledged write was lost beyond the plan's RPO")
def no_loss_beyond_rpo(drill):
    from harness.core import measure
    from harness.drill.finalize import LEDGER_SERVICES

    plan = drill.plan
    rpo = measure.rpo(drill.timeline.ops, drill.final_keys, drill.fault_t)
    tightest = min(plan.service(s).rpo_s for s in LEDGER_SERVICES)
    assert rpo.rpo_s <= tightest and not rpo.lower_bound, (
        f"RPO {rpo.rpo_s:.3f} s with {rpo.lost} acknowledged write(s) lost exceeds {tightest:.0f} s")


@then("the data integrity checks pass")
def integrity_passes(drill, drill_configuration):
    actions.validate_integrity(configuration=drill_configuration)
    failed = [f"{i['check']}: {i['details']}" for i in drill.integrity if i["status"] == "fail"]
    assert not failed, "; ".join(failed)


@then("every service meets its RTO and RPO objectives")
def objectives_met(drill):
    from harness.drill import finalize

    report = finalize.build(drill, drill.plan)
    missed = [f"{o['service']}: {o.get('reason') or 'missed'}" for o in report["objectives"] if not o["met"]]
    assert report["objectives"], "no objective was measured"
    assert not missed, "; ".join(missed)


@when("the runbook fails back to the primary region")
def runbook_fails_back(drill, drill_configuration):
    from harness.failover.failback import fail_back

    fail_back(to_region="primary", configuration=drill_configuration)
    actions.observe_failback(configuration=drill_configuration)
