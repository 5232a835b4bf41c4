"""The apps plane through Kubernetes: a region's catalog deployments scaled through its context's API, waited on until ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from harness.targets import _lab
from harness.targets.kubernetes import actions as k8s_actions
from harness.targets.kubernetes import ops as k8s_ops

if TYPE_CHECKING:  # planes.py imports this module: the protocol only for the type
    from harness.failover.planes import AppsPlane

__all__ = ["KubernetesApps", "kubernetes_apps"]

#: how long a scale may take to become ready (the DR pods turn Ready once their database is writable)
SCALE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class KubernetesApps:
    """Scales the environment's catalog deployments of a region through that region's Kubernetes context."""

    cluster: k8s_ops.Cluster
    timeout_s: float = SCALE_TIMEOUT_S
    via: str = "kubernetes api"

    def scale(self, region: str, replicas: int, wait: bool = True) -> dict[str, Any]:
        out = k8s_actions.scale_deployments(self.cluster, region, replicas, wait=wait, timeout_s=self.timeout_s)
        return {**out, "via": self.via}


def kubernetes_apps(t: _lab.LabTarget, http: Any, configuration: Mapping[str, Any] | None) -> AppsPlane:
    """The apps plane of the configured environment's Kubernetes API (one client per region, built once for the
    plane's life; the embedded lab's topology fills lab-cloud's references). `http` is unused: the API is the way."""
    timeout = float((configuration or {}).get("drill_scale_timeout_s") or SCALE_TIMEOUT_S)
    return KubernetesApps(k8s_ops.cluster(configuration, lab=t), timeout)
