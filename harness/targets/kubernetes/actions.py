"""Kubernetes actions with their named idempotent rollbacks: scale a deployment, cordon and uncordon a node, delete a pod."""

from __future__ import annotations

from typing import Any

from harness.errors import UsageError
from harness.safety import guard
from harness.targets.kubernetes import ops

__all__ = ["cordon_node", "delete_pod", "restore_deployment_scale", "scale_deployment", "scale_deployments",
           "uncordon_node", "wait_pods_ready"]

DEFAULT_TIMEOUT_S = 60.0


def _count(replicas: Any) -> int:
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise UsageError(f"replicas {replicas!r} must be a non-negative integer")
    return replicas


def scale_deployments(c: ops.Cluster, region: str, replicas: int, wait: bool = True,
                      timeout_s: float = DEFAULT_TIMEOUT_S, deployments: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Patch the scale subresource of each of `deployments` (default: every catalog deployment) in `region` and,
    with `wait`, poll until every one has readyReplicas == replicas (and its status observed the change).
    Uses the open Cluster `c` (no guard: the caller's fault or runbook step is the guarded act)."""
    region = c.region(region)
    replicas = _count(replicas)
    names = deployments or c.deployments
    apps = c.apps(region)
    before = {}
    for name in names:
        spec = apps.read_namespaced_deployment_scale(name, c.namespace).spec  # None: a dry run's empty answer
        before[name] = int(getattr(spec, "replicas", None) or 0)
        apps.patch_namespaced_deployment_scale(name, c.namespace, {"spec": {"replicas": replicas}})
    out: dict[str, Any] = {"region": region, "replicas": replicas, "deployments": list(names), "from": before}
    if wait:
        def settled() -> bool:
            for name in names:
                st = ops.deployment_status(apps.read_namespaced_deployment(name, c.namespace))
                if st["replicas"] != replicas or st["ready_replicas"] != replicas:
                    return False
                if st["observed_generation"] is not None and st["generation"] is not None \
                        and st["observed_generation"] < st["generation"]:
                    return False
            return True

        ops.wait_until(settled, timeout_s, f"{', '.join(names)} in {region}: readyReplicas == {replicas}")
    return out


def scale_deployment(region: str, replicas: int, deployment: str | None = None, wait: bool = True,
                     timeout_s: float = DEFAULT_TIMEOUT_S, configuration: dict | None = None,
                     secrets: dict | None = None) -> dict:
    """Scale `deployment` (default: every catalog deployment) of `region` to `replicas` through the scale
    subresource; with `wait` until readyReplicas == replicas. Rollback: restore_deployment_scale."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        names = (deployment,) if deployment else c.deployments
        target = f"deployment:{region}:{','.join(names)}"
        guard.check("scale_region", target, regions=(region,), components=("app",), configuration=configuration)
        before = {n: int(c.apps(region).read_namespaced_deployment_scale(n, c.namespace).spec.replicas or 0)
                  for n in names}
        inj = guard.inject("scale_region", target,
                           revert=(restore_deployment_scale, {"region": region, "replicas": before}),
                           regions=(region,), components=("app",), configuration=configuration,
                           details={"from": before, "to": replicas, "via": "kubernetes"})
        if not inj.proceed:
            return inj.to_dict()
        out = scale_deployments(c, region, replicas, wait, timeout_s, names)
    return {**out, "fault_id": inj.entry.id}


def restore_deployment_scale(region: str, replicas: dict | None = None, wait: bool = True,
                             timeout_s: float = DEFAULT_TIMEOUT_S, configuration: dict | None = None,
                             secrets: dict | None = None) -> dict:
    """Scale each deployment back to its count in `replicas` ({deployment: n}); idempotent."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        for name, n in (replicas or {}).items():
            scale_deployments(c, region, int(n), wait, timeout_s, (name,))
    return {"region": region, "replicas": replicas,
            "reverted": guard.mark_reverted("scale_region", f"deployment:{region}:{','.join(replicas or {})}",
                                            configuration)}


def _set_unschedulable(c: ops.Cluster, region: str, node: str, value: bool) -> bool:
    """Set spec.unschedulable; True when it changed."""
    core = c.core(region)
    was = bool(core.read_node(node).spec.unschedulable)
    if was != value:
        core.patch_node(node, {"spec": {"unschedulable": value or None}})
    return was != value


def cordon_node(node: str, region: str = "primary", configuration: dict | None = None,
                secrets: dict | None = None) -> dict:
    """Mark `node` of `region` unschedulable (running pods stay). Rollback: uncordon_node."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        target = f"node:{region}:{node}"
        guard.check("cordon_node", target, regions=(region,), components=("app",), configuration=configuration)
        inj = guard.inject("cordon_node", target, revert=(uncordon_node, {"node": node, "region": region}),
                           regions=(region,), components=("app",), configuration=configuration)
        if not inj.proceed:
            return inj.to_dict()
        changed = _set_unschedulable(c, region, node, True)
    return {"region": region, "node": node, "changed": changed, "fault_id": inj.entry.id}


def uncordon_node(node: str | None = None, region: str = "primary", configuration: dict | None = None,
                  secrets: dict | None = None) -> dict:
    """Make `node` (default: every node of `region`) schedulable again; idempotent. Marks cordon and drain
    faults of that node reverted."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        names = [node] if node else [n.metadata.name for n in c.core(region).list_node().items]
        changed = [n for n in names if _set_unschedulable(c, region, n, False)]
    reverted = []
    for n in names:
        reverted += guard.mark_reverted(("cordon_node", "drain_node"), f"node:{region}:{n}", configuration) or []
    return {"region": region, "uncordoned": changed, "nodes": names, "reverted": reverted}


def delete_pod(region: str = "primary", label_selector: str | None = None, name: str | None = None,
               configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Delete one pod (`name`, else the first of `label_selector`, default the first catalog deployment's
    selector) of `region`: its controller replaces it. Rollback: wait_pods_ready."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        selector = label_selector or c.selector(c.deployments[0], region)
        core = c.core(region)
        if name is None:
            pods = sorted(core.list_namespaced_pod(c.namespace, label_selector=selector).items,
                          key=lambda p: p.metadata.name)
            if not pods:
                raise UsageError(f"no pod matches {selector!r} in {region}")
            name = pods[0].metadata.name
        target = f"pod:{region}:{selector}"
        guard.check("delete_pod", target, regions=(region,), components=("app",), configuration=configuration)
        inj = guard.inject("delete_pod", target, revert=(wait_pods_ready, {"region": region, "label_selector": selector}),
                           regions=(region,), components=("app",), configuration=configuration, details={"pod": name})
        if not inj.proceed:
            return inj.to_dict()
        core.delete_namespaced_pod(name, c.namespace)
    return {"region": region, "pod": name, "label_selector": selector, "fault_id": inj.entry.id}


def wait_pods_ready(region: str = "primary", label_selector: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                    configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Wait until every catalog deployment of `region` is ready again (readyReplicas >= spec.replicas) and
    the pods of `label_selector` are all Ready; idempotent."""
    with ops.cluster(configuration) as c:
        region = c.region(region)
        apps, core = c.apps(region), c.core(region)

        def ready() -> bool:
            for n in c.deployments:
                st = ops.deployment_status(apps.read_namespaced_deployment(n, c.namespace))
                if st["ready_replicas"] < st["replicas"]:
                    return False
            if label_selector:
                pods = core.list_namespaced_pod(c.namespace, label_selector=label_selector).items
                return all(ops.pod_ready(p) for p in pods)
            return True

        ops.wait_until(ready, timeout_s, f"deployments of {region} ready")
    # our delete_pod and chaosk8s terminate_pods (recorded by the drill control) on this selector
    reverted = (guard.mark_reverted(("delete_pod", "terminate_pods"), f"pod:{region}:{label_selector}", configuration)
                if label_selector else [])
    return {"region": region, "ready": True, "reverted": reverted}
