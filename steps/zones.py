"""Steps of the node, availability-zone and database failover drills (levels 1 and 2 inside the primary region)."""

from __future__ import annotations

import pytest
from pytest_bdd import given, parsers, then, when

from harness.targets.app import actions as app_actions
from harness.targets.app import probes as app_probes
from harness.targets.postgres import probes as pg_probes
from harness.targets.router import probes as router_probes

from .timing import poll


@when(parsers.parse('the node "{node}" of the {region} region is lost'))
def node_is_lost(drill, drill_configuration, node: str, region: str):
    out = app_actions.lose_node(node, region, configuration=drill_configuration)
    assert out.get("fault_id"), out


@then(parsers.parse('the node "{node}" is not ready and cordoned'))
def node_not_ready(drill, drill_configuration, node: str):
    state = app_probes.nodes(configuration=drill_configuration)
    found = [n for nodes in state.values() for n in nodes if n["name"] == node]
    assert found and not found[0]["ready"] and found[0]["unschedulable"], found


@then(parsers.parse("the app replicas run again on the other node within the downtime of level {level:d}"))
def replicas_rescheduled(drill, drill_configuration, level: int):
    lost = next(e.data["target"].rsplit(":", 1)[1] for e in drill.timeline.of_kind("fault")
                if e.event == "lose_node" and e.data.get("phase") == "inject")
    out = app_probes.replicas_rescheduled("primary", lost, level, configuration=drill_configuration)
    assert out["ok"], out


@then("the global endpoint still routes to the primary region, whose database was not failed over")
def no_failover(drill, drill_configuration):
    assert router_probes.active_region(configuration=drill_configuration) == "primary"
    assert pg_probes.is_primary("primary", configuration=drill_configuration)
    assert not [e for e in drill.timeline.of_kind("failover")], "a failover happened"


@then("no acknowledged write was lost")
def nothing_lost(drill):
    from harness.core import measure

    rpo = measure.rpo(drill.timeline.ops, drill.final_keys, drill.fault_t)
    assert rpo.lost == 0, f"{rpo.lost} acknowledged write(s) lost"


@when(parsers.parse('the node "{node}" of the {region} region is back'))
def node_is_back(drill, drill_configuration, node: str, region: str):
    app_actions.restore_node(node, region, configuration=drill_configuration)


@then(parsers.parse("every node of the {region} region is ready"))
def nodes_ready(drill, drill_configuration, region: str):
    poll(lambda: app_probes.nodes_ready(region, configuration=drill_configuration), 10, f"every node of {region} ready")


# -- the in-region standby (availability-zone loss, database failover) -----------------------------------------

@pytest.fixture
def zone_drill() -> dict:
    """What a scenario of this module keeps between its steps (the app replicas before the fault)."""
    return {}


@given("the in-region standby streams synchronously from the primary database")
def inregion_sync(drill, drill_configuration, zone_drill):
    from harness.failover import inregion
    from harness.targets import _lab

    shape = inregion.in_region_shape(_lab.resolve(drill_configuration))
    assert shape and all(shape.values()), shape
    zone_drill["replicas_before"] = app_probes.replicas("primary", configuration=drill_configuration)["replicas"]


@when(parsers.parse('the availability zone "{zone}" of the {region} region is lost'))
def zone_is_lost(drill, drill_configuration, zone: str, region: str):
    from harness.targets.postgres import actions as pg_actions

    out = app_actions.lose_zone(zone, region, configuration=drill_configuration)
    assert out["nodes"] and all(n.get("fault_id") for n in out["nodes"]), out
    pg_actions.kill_primary(region, configuration=drill_configuration)  # the database node of that zone


@when(parsers.parse("the primary database of the {region} region is lost"))
def primary_database_lost(drill, drill_configuration, region: str):
    from harness.targets.postgres import actions as pg_actions

    out = pg_actions.kill_primary(region, configuration=drill_configuration)
    assert out.get("fault_id"), out


@when("the in-region standby is promoted")
def inregion_promoted(drill, drill_configuration):
    from harness.failover import inregion

    out = inregion.fail_over_in_region(configuration=drill_configuration)
    assert out.get("promoted") == inregion.INREGION, out


@then(parsers.parse("every catalog service answers through the global endpoint again within the downtime of level {level:d}"))
def services_back_within(drill, drill_configuration, level: int):
    from harness.drill import actions

    out = app_probes.services_recovered(level, configuration=drill_configuration)
    assert out["ok"], out
    services = list(drill.workload.probes.services)
    poll(lambda: not actions.not_recovered(drill, services, 3), 30, "3 consecutive successful probes of every service")


@then("the global endpoint still routes to the primary region")
def still_primary(drill, drill_configuration):
    assert router_probes.active_region(configuration=drill_configuration) == "primary"
    assert not [e for e in drill.timeline.of_kind("failover") if e.data.get("region") == "dr"
                and e.event in ("promoted", "traffic_switched")], "the DR region took over"


@then("the DR standby streams from the new primary")
def dr_follows(drill, drill_configuration):
    from harness.failover import inregion

    assert [e for e in drill.timeline.of_kind("failover") if e.event == "rejoined" and e.data.get("region") == "dr"
            and e.data.get("upstream") == inregion.INREGION]
    from harness.targets import _lab

    t = _lab.resolve(drill_configuration)
    poll(lambda: inregion._on_timeline_of(t, "dr", inregion.INREGION), 20, "the DR standby on the new timeline")


@then("no app replica was restarted")
def apps_untouched(drill, drill_configuration, zone_drill):
    before = {r["slot"]: r["pid"] for r in zone_drill["replicas_before"] if r.get("alive")}
    now = {r["slot"]: r["pid"] for r in app_probes.replicas("primary", configuration=drill_configuration)["replicas"]
           if r.get("alive")}
    assert before and now == before, (before, now)


@when("the primary region's database fails back to its first zone")
def inregion_fails_back(drill, drill_configuration):
    from harness.failover import inregion

    inregion.fail_back_in_region(configuration=drill_configuration)
    app_actions.restore_zone("ap-northeast-2a", "primary", configuration=drill_configuration)


@then("the primary region's database is in its starting shape")
def inregion_in_shape(drill, drill_configuration):
    from harness.failover import inregion

    poll(lambda: inregion.in_region_ok(configuration=drill_configuration), 20, "the primary region in its starting shape")
