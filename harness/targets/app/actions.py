"""K-ERP app faults with their rollbacks: scale a region, SIGKILL one replica (the supervisor restarts it), lose a node."""

from __future__ import annotations

import os
import signal
from typing import Any

from harness.safety import guard
from harness.errors import LabError, UsageError
from harness.lab.manager import APP_SLOTS, PRIMARY_REPLICAS
from harness.targets import _lab
from harness.targets.app import ops

__all__ = ["kill_replica", "lose_node", "lose_zone", "restore_node", "restore_replica", "restore_scale",
           "restore_zone", "scale_region"]

LAB_REPLICAS = {"primary": PRIMARY_REPLICAS, "dr": 0}


def _check_count(replicas: Any) -> int:
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= APP_SLOTS:
        raise UsageError(f"replicas {replicas!r} must be an integer in 0..{APP_SLOTS}")
    return replicas


def scale_region(region: str, replicas: int, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Scale the app replicas of `region` to `replicas`. Rollback: restore_scale."""
    _lab.check_region(region)
    replicas = _check_count(replicas)
    guard.check("scale_region", f"app:{region}", regions=(region,), components=("app",), configuration=configuration)
    t = _lab.resolve(configuration)
    with t.http() as http:
        before = ops.regions(http, t.supervisor_url)[region]["desired"]
        inj = guard.inject("scale_region", f"app:{region}", revert=(restore_scale, {"region": region, "replicas": before}),
                           regions=(region,), components=("app",), configuration=configuration,
                           details={"from": before, "to": replicas})
        if not inj.proceed:
            return inj.to_dict()
        ops.scale(http, t.supervisor_url, region, replicas)
        ops.wait_scaled(http, t.supervisor_url, region, replicas)
    return {"region": region, "from": before, "to": replicas, "fault_id": inj.entry.id}


def restore_scale(region: str, replicas: int | None = None, configuration: dict | None = None,
                  secrets: dict | None = None) -> dict:
    """Scale `region` back to `replicas` (default: the lab's shape, primary 2 and dr 0); idempotent."""
    _lab.check_region(region)
    n = _check_count(LAB_REPLICAS[region] if replicas is None else replicas)
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.scale(http, t.supervisor_url, region, n)
        ops.wait_scaled(http, t.supervisor_url, region, n)
    return {"region": region, "replicas": n,
            "reverted": guard.mark_reverted("scale_region", f"app:{region}", configuration)}


def kill_replica(region: str = "primary", slot: int = 0, configuration: dict | None = None,
                 secrets: dict | None = None) -> dict:
    """SIGKILL the app replica in `slot` of `region`; the supervisor brings it back. Rollback: restore_replica."""
    _lab.check_region(region)
    guard.check("kill_replica", f"app:{region}:{slot}", regions=(region,), components=("app",),
                configuration=configuration)
    t = _lab.resolve(configuration)
    with t.http() as http:
        rep = next((r for r in ops.alive_replicas(ops.regions(http, t.supervisor_url), region) if r["slot"] == slot), None)
    if rep is None:
        raise UsageError(f"no live app replica in slot {slot!r} of region {region!r}")
    inj = guard.inject("kill_replica", f"app:{region}:{slot}", revert=(restore_replica, {"region": region, "slot": slot}),
                       regions=(region,), components=("app",), configuration=configuration,
                       details={"pid": rep["pid"], "signal": "SIGKILL"})
    if not inj.proceed:
        return inj.to_dict()
    try:
        os.kill(rep["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    return {"region": region, "slot": slot, "pid": rep["pid"], "fault_id": inj.entry.id}


def restore_replica(region: str = "primary", slot: int = 0, timeout_s: float = 20.0,
                    configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Wait until the supervisor has the replica in `slot` alive again (when the region wants that slot)."""
    _lab.check_region(region)
    t = _lab.resolve(configuration)
    with t.http() as http:
        state = ops.regions(http, t.supervisor_url)[region]
        if slot < state["desired"]:
            def back() -> bool:
                reps = ops.alive_replicas(ops.regions(http, t.supervisor_url), region)
                return any(r["slot"] == slot for r in reps)
            try:
                _lab.wait_for(back, timeout_s, f"app replica {region}/{slot} restarted")
            except LabError as e:
                raise LabError(f"the supervisor did not restart app replica {region}/{slot}: {e}") from e
    return {"region": region, "slot": slot,
            "reverted": guard.mark_reverted("kill_replica", f"app:{region}:{slot}", configuration)}


# -- node and zone loss: the machine under a node is gone (its replicas die, the node turns NotReady and is
# cordoned); the lab's supervisor carries it out (PUT /nodes/{region}/{node}), as stopping the instance would

def _node_target(region: str, node: str) -> str:
    return f"node:{region}:{node}"


def _known_node(http: Any, t: _lab.LabTarget, region: str, node: str) -> dict[str, Any]:
    known = ops.nodes(http, t.supervisor_url).get(region, [])
    found = next((n for n in known if n["name"] == node), None)
    if found is None:
        raise UsageError(f"unknown node {node!r} in region {region!r} (known: {', '.join(n['name'] for n in known)})")
    return found


def lose_node(node: str, region: str = "primary", configuration: dict | None = None,
              secrets: dict | None = None) -> dict:
    """Lose `node` of `region`: its app replicas die at once, the node turns NotReady and cordoned; the replicas
    come back on the region's other node. Rollback: restore_node."""
    _lab.check_region(region)
    target = _node_target(region, node)
    guard.check("lose_node", target, regions=(region,), components=("app",), configuration=configuration)
    t = _lab.resolve(configuration)
    with t.http() as http:
        found = _known_node(http, t, region, node)
        inj = guard.inject("lose_node", target, revert=(restore_node, {"node": node, "region": region}),
                           regions=(region,), components=("app",), configuration=configuration,
                           details={"zone": found["zone"], "pods": found["pods"]})
        if not inj.proceed:
            return inj.to_dict()
        out = ops.set_node_lost(http, t.supervisor_url, region, node, True)
    return {**out, "fault_id": inj.entry.id}


def restore_node(node: str, region: str = "primary", timeout_s: float = 30.0, configuration: dict | None = None,
                 secrets: dict | None = None) -> dict:
    """`node` of `region` is back: Ready and schedulable (one replica moves back onto it when every replica runs
    elsewhere); idempotent."""
    _lab.check_region(region)
    t = _lab.resolve(configuration)
    with t.http() as http:
        _known_node(http, t, region, node)
        out = ops.set_node_lost(http, t.supervisor_url, region, node, False)
        ops.wait_replicas_ready(http, t.supervisor_url, region, timeout_s)
    return {**out, "reverted": guard.mark_reverted("lose_node", _node_target(region, node), configuration)}


def zone_nodes(http: Any, t: _lab.LabTarget, region: str, zone: str) -> list[str]:
    """The nodes of `region` in availability zone `zone` (UsageError naming the zones when there is none)."""
    known = ops.nodes(http, t.supervisor_url).get(region, [])
    names = [n["name"] for n in known if n["zone"] == zone]
    if not names:
        raise UsageError(f"no node of region {region!r} in zone {zone!r} "
                         f"(zones: {', '.join(sorted({n['zone'] for n in known}))})")
    return names


def _zone_nodes_each(zone: str, region: str, act, configuration: dict | None) -> dict:
    """`act(node, region, configuration=...)` on every node of `region` in availability zone `zone`."""
    _lab.check_region(region)
    t = _lab.resolve(configuration)
    with t.http() as http:
        names = zone_nodes(http, t, region, zone)
    return {"region": region, "zone": zone, "nodes": [act(n, region, configuration=configuration) for n in names]}


def lose_zone(zone: str, region: str = "primary", configuration: dict | None = None,
              secrets: dict | None = None) -> dict:
    """Lose every node of `region` in availability zone `zone` (each one a lose_node fault)."""
    return _zone_nodes_each(zone, region, lose_node, configuration)


def restore_zone(zone: str, region: str = "primary", configuration: dict | None = None,
                 secrets: dict | None = None) -> dict:
    """Every node of `region` in `zone` is back (restore_node each); idempotent."""
    return _zone_nodes_each(zone, region, restore_node, configuration)
