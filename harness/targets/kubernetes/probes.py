"""Read-only Kubernetes probes: a deployment's readiness, the pods of a selector (ready, by phase), the nodes ready."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from harness.core import escalation
from harness.errors import ConfigError, UsageError
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab
from harness.targets.app import ops as app_ops
from harness.targets.kubernetes import ops

__all__ = ["deployment_ready", "deployments_ready", "nodes_ready", "pods_on_schedulable_nodes", "pods_ready",
           "recovered_within_level", "region_readiness"]


def _deployment_ready(c: ops.Cluster, region: str, name: str) -> dict[str, Any]:
    st = ops.deployment_status(c.apps(region).read_namespaced_deployment(name, c.namespace))
    return {**st, "region": region, "ready": st["ready_replicas"] >= st["replicas"]}


def deployment_ready(region: str = "primary", deployment: str | None = None, configuration: dict | None = None,
                     secrets: dict | None = None) -> dict:
    """`deployment` (default: the first catalog deployment) of `region`: spec.replicas, readyReplicas and
    "ready" (readyReplicas >= spec.replicas)."""
    with ops.cluster(configuration) as c:
        return _deployment_ready(c, c.region(region), deployment or c.deployments[0])


def deployments_ready(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """True when every catalog service's deployment of `region` has readyReplicas >= spec.replicas > 0."""
    with ops.cluster(configuration) as c:
        return all(d["ready"] and d["replicas"] > 0
                   for d in (_deployment_ready(c, c.region(region), n) for n in c.deployments))


def _pods(c: ops.Cluster, region: str, label_selector: str) -> dict[str, Any]:
    pods = c.core(region).list_namespaced_pod(c.namespace, label_selector=label_selector).items
    return {"region": region, "label_selector": label_selector, "total": len(pods),
            "ready": sum(1 for p in pods if ops.pod_ready(p)),
            "phases": dict(Counter(str(p.status.phase) for p in pods)),
            "pods": [{"name": p.metadata.name, "phase": p.status.phase, "ready": ops.pod_ready(p),
                      "node": p.spec.node_name} for p in pods]}


def pods_ready(region: str = "primary", label_selector: str | None = None, configuration: dict | None = None,
               secrets: dict | None = None) -> dict:
    """The pods of `label_selector` (default: the first catalog deployment's selector) in `region`: how many,
    how many Ready, counts by phase, and each pod's node."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        return _pods(c, region, label_selector or c.selector(c.deployments[0], region))


def _nodes(c: ops.Cluster, region: str) -> dict[str, Any]:
    nodes = c.core(region).list_node().items
    out = [{"name": n.metadata.name, "ready": ops.node_ready(n), "unschedulable": bool(n.spec.unschedulable)}
           for n in nodes]
    return {"region": region, "total": len(out), "ready": sum(1 for n in out if n["ready"]), "nodes": out}


def nodes_ready(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The nodes of `region`: how many, how many are Ready and schedulable (not cordoned), each one."""
    with ops.cluster(configuration) as c:
        return _nodes(c, c.region(region))


def region_readiness(c: ops.Cluster, region: str) -> dict[str, Any]:
    """Nodes ready and pods ready of every catalog deployment in `region`, with one open Cluster (the detector
    samples this)."""
    nodes = _nodes(c, region)
    deps = [_deployment_ready(c, region, n) for n in c.deployments]
    pods = [_pods(c, region, c.selector(n, region)) for n in c.deployments]
    return {"region": region, "nodes_ready": nodes["ready"], "nodes": nodes["total"],
            "pods_ready": sum(p["ready"] for p in pods), "pods": sum(p["total"] for p in pods),
            "desired": sum(d["replicas"] for d in deps)}


def pods_on_schedulable_nodes(region: str = "primary", label_selector: str | None = None,
                              configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """True when every pod of `label_selector` (default: the first catalog deployment's) in `region` is Ready on
    a Ready, schedulable node (after a cordon or drain: none is left on the cordoned node)."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        good = {n["name"] for n in _nodes(c, region)["nodes"] if n["ready"]}
        pods = _pods(c, region, label_selector or c.selector(c.deployments[0], region))
    return pods["total"] > 0 and all(p["ready"] and p["node"] in good for p in pods["pods"])


def recovered_within_level(level: int = 1, region: str = "primary", configuration: dict | None = None,
                           secrets: dict | None = None) -> bool:
    """Wait until `region`'s catalog deployments are ready again and every catalog service answers through the
    global endpoint; True when that came within the plan's expected downtime of disaster level `level` on the
    drill clock (x the configuration's `drill_time_scale`; the plan's own clock when it names none), measured from
    the run's first fault on the timeline (the measurement is a timeline event)."""
    cfg = configuration or {}
    try:  # the plan's own clock when the configuration names no drill_time_scale
        lvl, scale, allowed = escalation.level_downtime(guard.plan(configuration), level,
                                                        cfg.get("drill_time_scale") or 1.0)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    s = run_context.of(configuration)
    t0 = (s.fault_t if s is not None else None) or time.time()
    deadline = t0 + allowed
    t = _lab.resolve(configuration)
    with ops.cluster(configuration, lab=t) as c, t.http(timeout=3.0) as http:
        region = c.region(region)

        selectors = {n: c.selector(n, region) for n in c.deployments}

        def back() -> bool:
            # the Pods themselves, not only the Deployment's status (it trails a deletion by a reconcile)
            for n in c.deployments:
                d = _deployment_ready(c, region, n)
                pods = _pods(c, region, selectors[n])
                if not (d["ready"] and d["replicas"] > 0 and pods["ready"] >= d["replicas"] == pods["total"]):
                    return False
            return all(app_ops.check_service(http, t.router_url, svc, write=False)["ok"] for svc in app_ops.SERVICES)

        while not back() and time.time() < deadline:
            time.sleep(0.25)
        at = time.time()
        ok = back() if at >= deadline else True
    took = round(at - t0, 3)
    observed = (f"{region} deployments ready and every service answering {took} s after the fault "
                f"(level {level} expected downtime {lvl.expected_downtime_s:.0f} s x {scale:g} = {allowed:g} s)")
    if s is not None:
        s.event("check", observed, region=region, recovered_s=took,
                expected_downtime_s=lvl.expected_downtime_s, time_scale=scale, allowed_s=allowed, ok=ok)
    return ok
