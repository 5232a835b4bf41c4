"""Steps of the single-component drills of the catalog (levels 1 and 2): pod loss, network instability, Redis
primary loss, Popbill outage. The faults go through the targets (guard, fault ledger, named rollbacks), the checks
through harness.drill.component_checks; the scenario teardown (steps/common.py) reverts whatever is left."""

from __future__ import annotations

from pytest_bdd import given, parsers, then, when

from harness.drill import actions, component_checks, exercises
from harness.targets.kubernetes import actions as k8s
from harness.targets.redis import actions as redis_actions
from harness.targets.redis import probes as redis_probes
from harness.targets.toxiproxy import actions as toxiproxy

from .timing import scaled

#: the app-facing links of the primary region, by the name the scenarios give them
LINKS = {"the database": "primary_app_postgres", "Redis": "primary_app_redis"}
APP_PODS = "app=kerp-app"


def _link(target: str) -> str:
    if target not in LINKS:
        raise AssertionError(f"no app link to {target!r} ({', '.join(LINKS)})")
    return LINKS[target]


@given(parsers.parse("the drill clock runs at {scale:g} of the plan's clock"))
def drill_clock(drill, drill_configuration, scale: float):
    drill_configuration["drill_time_scale"] = scale
    drill.config["drill_time_scale"] = scale
    drill.event("note", f"drill clock: {scale:g} drill seconds per plan second", time_scale=scale)


# -- pod loss ----------------------------------------------------------------------------------------------------
@when("one app replica pod of the primary region is deleted through the Kubernetes API")
def delete_one_pod(drill_configuration):
    res = k8s.delete_pod(region="primary", label_selector=APP_PODS, configuration=drill_configuration)
    assert res.get("pod"), f"no pod was deleted: {res}"


@then(parsers.parse("Kubernetes brings a replacement pod within {seconds:d} seconds"))
def replacement_pod(drill_configuration, seconds: int):
    k8s.wait_pods_ready(region="primary", label_selector=APP_PODS, timeout_s=scaled(seconds),
                        configuration=drill_configuration)


# -- network instability -----------------------------------------------------------------------------------------
@when(parsers.parse("the link from the apps to {target} has {latency:d} ms latency with {jitter:d} ms jitter "
                    "for {seconds:g} seconds"))
def latency_with_jitter(drill_configuration, target: str, latency: int, jitter: int, seconds: float):
    toxiproxy.add_latency(_link(target), latency_ms=latency, jitter_ms=jitter, duration_s=seconds,
                          configuration=drill_configuration)


@when(parsers.parse("connections from the apps to {target} are reset for {seconds:g} seconds"))
def connection_resets(drill_configuration, target: str, seconds: float):
    toxiproxy.add_resets(_link(target), timeout_ms=0, toxicity=0.5, duration_s=seconds,
                         configuration=drill_configuration)


@when(parsers.parse("the link from the apps to {target} is cut for {seconds:g} seconds"))
def partition(drill_configuration, target: str, seconds: float):
    toxiproxy.partition_link(_link(target), duration_s=seconds, configuration=drill_configuration)


# -- Redis primary loss ------------------------------------------------------------------------------------------
@when("the Redis primary dies")
def redis_primary_dies(drill_configuration):
    res = redis_actions.kill_primary(region="primary", configuration=drill_configuration)
    assert res.get("killed"), f"the Valkey primary was not killed: {res}"


@when("the Redis replica is promoted and the apps use it")
def redis_replica_promoted(drill_configuration):
    redis_actions.promote_replica(region="dr", configuration=drill_configuration)
    toxiproxy.redirect_link("primary_app_redis", to_region="dr", configuration=drill_configuration)


@then("sessions are kept within the RPO of authentication")
def sessions_kept(drill_configuration):
    assert component_checks.sessions_within_rpo(service="authentication", configuration=drill_configuration)


@then("no acknowledged voucher or tax invoice was lost")
def vouchers_and_invoices_kept(drill_configuration):
    assert component_checks.nothing_acknowledged_lost(["write", "invoice"], configuration=drill_configuration)


@when("the old Redis primary rejoins as a replica and takes its role back")
def redis_rejoins(drill_configuration):
    redis_actions.restore_primary(region="primary", role="master", configuration=drill_configuration)
    redis_actions.demote_replica(region="dr", configuration=drill_configuration)
    toxiproxy.restore_upstream("primary_app_redis", configuration=drill_configuration)


@then("Redis is back in its starting shape")
def redis_starting_shape(drill_configuration):
    roles = redis_probes.roles(configuration=drill_configuration)
    assert roles == {"primary": "master", "dr": "slave"}, roles


# -- Popbill outage ----------------------------------------------------------------------------------------------
@when("the link to Popbill is cut")
def popbill_cut(drill_configuration):
    toxiproxy.cut_link("popbill", configuration=drill_configuration)


@then(parsers.parse("only the tax invoice service fails for {seconds:g} seconds"))
def only_tax_invoices_fail(drill, drill_configuration, seconds: float):
    res = exercises.check_fault_isolation("tax-invoice-service", window_s=seconds, configuration=drill_configuration)
    assert not res["leaked"] and res["failing_service_failed"], res


@when("the link to Popbill is restored")
def popbill_restored(drill_configuration):
    toxiproxy.restore_link("popbill", configuration=drill_configuration)


@then("nothing else degraded")
def nothing_else_degraded(drill_configuration):
    assert component_checks.service_unaffected(["authentication", "api-gateway", "voucher-service"],
                                               configuration=drill_configuration)


@then("no tax invoice number was reused or skipped")
def invoice_numbers(drill_configuration):
    assert component_checks.invoice_numbers_continuous(configuration=drill_configuration)


# -- shared ------------------------------------------------------------------------------------------------------
@then(parsers.parse("every service keeps or regains service within the level {level:d} downtime"))
def within_level(drill_configuration, level: int):
    assert component_checks.within_level_downtime(level=level, recovery_timeout_s=scaled(30),
                                                  configuration=drill_configuration)


@then("no failover happened")
def no_failover(drill_configuration):
    assert component_checks.no_failover(region="primary", configuration=drill_configuration)


@when("the workload stops and the final state is read")
def workload_stops(drill, drill_configuration):
    actions.stop_workload(recovery_timeout_s=scaled(30), configuration=drill_configuration)
    assert drill.final_keys is not None


@then("nothing acknowledged was lost")
def nothing_lost(drill_configuration):
    assert component_checks.nothing_acknowledged_lost(configuration=drill_configuration)
