"""The Kubernetes API of an environment's regions, one client per region built once per call, and pure readings of its objects."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from harness import clients
from harness.config.environment import Environment, load_environment, resolve_references
from harness.errors import HarnessError, LabError, UsageError
from harness.safety import context as run_context
from harness.targets import _lab

__all__ = ["Cluster", "cluster", "deployment_status", "environment_of", "node_ready", "pod_ready", "wait_until"]

REGIONS = ("primary", "dr")


def environment_of(configuration: Mapping[str, Any] | None) -> Environment:
    """The run's environment (run context), else configuration drill_environment_file / drill_environment_name,
    else lab-cloud (the embedded lab through its Kubernetes API). The plain lab (kind `lab`, driven through its
    own adapters, no kubernetes block) always runs its Kubernetes API too: its Kubernetes side is the one
    lab-cloud describes (the same lab's kubeconfig, contexts and namespace)."""
    s = run_context.of(configuration)
    env = getattr(s, "environment", None) if s is not None else None
    if env is None:
        cfg = configuration or {}
        env = load_environment(str(cfg.get("drill_environment_file") or cfg.get("drill_environment_name")
                                   or "lab-cloud"))
    if env.kind == "lab" and not env.get("kubernetes"):
        return load_environment("lab-cloud")
    return env


@dataclass
class Cluster:
    """An environment's Kubernetes side: its namespace, the deployments of its catalog services, and one API
    client per region (built on first use, reused for the rest of the call)."""

    environment: Environment
    configuration: Mapping[str, Any] | None = None
    topology: Mapping[str, Any] | None = None
    _clients: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data, _ = resolve_references(self.environment, topology=self.topology, strict=False)
        kube = self.data.get("kubernetes") or {}
        if not kube:
            raise UsageError(f"environment {self.environment.name!r} has no kubernetes block")
        self.namespace = str(kube.get("namespace") or "default")
        self.deployments = tuple(dict.fromkeys(str(d) for d in (kube.get("deployments") or {}).values()))

    def region(self, region: str) -> str:
        if region not in (self.data.get("regions") or {}):
            raise UsageError(f"unknown region {region!r} (environment {self.environment.name!r}: "
                             f"{', '.join(self.data.get('regions') or {})})")
        return region

    def api_client(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = clients.kubernetes_api(self.environment, region=self.region(region),
                                                           topology=self.topology, configuration=self.configuration)
        return self._clients[region]

    def core(self, region: str) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client(region))

    def apps(self, region: str) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client(region))

    def selector(self, deployment: str, region: str) -> str:
        """The label selector of `deployment`'s Pods (its spec.selector.matchLabels)."""
        d = self.apps(region).read_namespaced_deployment(deployment, self.namespace)
        labels = (d.spec.selector.match_labels or {}) if d.spec and d.spec.selector else {}
        if not labels:
            raise UsageError(f"deployment {deployment!r} in {region} has no matchLabels selector")
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

    def close(self) -> None:
        for c in self._clients.values():
            try:
                c.close()
            except Exception:  # a closed pool: nothing left to release
                pass
        self._clients.clear()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def cluster(configuration: Mapping[str, Any] | None = None, *, lab: Any = None) -> Cluster:
    """The Cluster of the configured environment; the embedded lab's topology fills its ${lab:...} references."""
    env = environment_of(configuration)
    topology = None
    if env.embedded:
        try:
            topology = (lab or _lab.resolve(configuration)).lab.topology()
        except HarnessError as e:
            raise LabError(f"environment {env.name!r} needs a running lab: {e}") from e
    return Cluster(env, configuration, topology)


# -- pure readings of API objects (dicts from ApiClient.sanitize_for_serialization or model objects) ---------
def _conditions(obj: Any) -> list[Any]:
    st = getattr(obj, "status", None)
    return list(getattr(st, "conditions", None) or [])


def pod_ready(pod: Any) -> bool:
    """A Pod is Running and its Ready condition is True (and it is not being deleted)."""
    if getattr(pod.metadata, "deletion_timestamp", None):
        return False
    if getattr(pod.status, "phase", None) != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in _conditions(pod))


def node_ready(node: Any) -> bool:
    """A Node's Ready condition is True and it is schedulable (not cordoned)."""
    if getattr(node.spec, "unschedulable", None):
        return False
    return any(c.type == "Ready" and c.status == "True" for c in _conditions(node))


def deployment_status(d: Any) -> dict[str, Any]:
    """spec.replicas and the status counts of a Deployment, as JSON."""
    st = d.status
    return {"name": d.metadata.name, "replicas": int(d.spec.replicas or 0),
            "ready_replicas": int(st.ready_replicas or 0), "available_replicas": int(st.available_replicas or 0),
            "updated_replicas": int(st.updated_replicas or 0),
            "observed_generation": st.observed_generation, "generation": d.metadata.generation}


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, interval: float = 0.25) -> Any:
    """Poll `pred` until it returns a truthy value; LabError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise LabError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval)
