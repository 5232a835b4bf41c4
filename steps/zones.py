"""Steps of the node, availability-zone and database failover drills (levels 1 and 2 inside the primary region)."""

from __future__ import annotations

from pytest_bdd import parsers, then, when

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
