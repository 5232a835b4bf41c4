"""Read-only Kubernetes probes: a deployment's readiness, the pods of a selector (ready, by phase), the nodes ready."""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.targets.kubernetes import ops

__all__ = ["deployment_ready", "deployments_ready", "nodes_ready", "pods_ready", "region_readiness"]


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
