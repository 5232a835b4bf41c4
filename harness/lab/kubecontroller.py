"""The supervisor's Kubernetes side: a Deployment per region, a Pod per app process, Nodes, kept in step with the processes.

Each region is one cluster of the lab's Kubernetes API (harness/lab/kubeapi.py). The Deployment's
`spec.replicas` is the one source of truth for how many app processes a region runs: `kubectl scale`, the
scale subresource and the supervisor's own `PUT /regions/{region}` all end up there. Reconcile rules (every
`interval_s`) are listed in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx

from harness.errors import ConfigError, LabError
from harness.lab.procs import signal_group

if TYPE_CHECKING:
    from harness.lab.supervisor import Replica, Supervisor

log = logging.getLogger("harness.lab.kubecontroller")

READY_RECHECK_S = 2.0
PROBE_TIMEOUT_S = 0.5


def _iso(epoch: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if epoch is None else epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class KubeSpec:
    """The `kubernetes` block of supervisor.json: one API URL per region, namespace, deployment name, nodes."""

    clusters: Mapping[str, str]
    namespace: str = "kerp"
    deployment: str = "kerp-app"
    nodes_per_region: int = 2
    interval_s: float = 0.25
    #: availability zones per region (node i sits in zones[(i - 1) % len]); cloud region names per region
    zones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cloud_regions: Mapping[str, str] = field(default_factory=dict)

    def zone_of(self, region: str, node: str) -> str:
        """The availability zone of `node` (`<region>-node-<i>`) of `region`."""
        zones = self.zones.get(region) or (f"{region}-a", f"{region}-c")
        try:
            i = int(node.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            i = 1
        return zones[(i - 1) % len(zones)]

    @classmethod
    def from_json(cls, data: Any, regions: set[str]) -> KubeSpec:
        where = "supervisor config: kubernetes"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be an object")
        clusters = data.get("clusters")
        if not isinstance(clusters, Mapping) or set(clusters) != regions or not all(isinstance(u, str) and u.startswith("http") for u in clusters.values()):
            raise ConfigError(f"{where}: 'clusters' must map every region ({', '.join(sorted(regions))}) to an http(s) API URL")
        nodes = data.get("nodes_per_region", 2)
        if not isinstance(nodes, int) or isinstance(nodes, bool) or not 1 <= nodes <= 10:
            raise ConfigError(f"{where}: nodes_per_region {nodes!r} must be an integer in 1..10")
        interval = data.get("interval_s", 0.25)
        if not isinstance(interval, (int, float)) or not 0.05 <= interval <= 5:
            raise ConfigError(f"{where}: interval_s {interval!r} must be a number in 0.05..5")
        for key in ("namespace", "deployment"):
            v = data.get(key, getattr(cls, key))
            if not isinstance(v, str) or not v or not v.replace("-", "").isalnum() or v != v.lower():
                raise ConfigError(f"{where}: {key} {v!r} must be a lower-case DNS label")
        zones = data.get("zones", {}) or {}
        if not isinstance(zones, Mapping) or not all(
                r in regions and isinstance(z, Sequence) and not isinstance(z, str) and z and all(isinstance(x, str) for x in z)
                for r, z in zones.items()):
            raise ConfigError(f"{where}: 'zones' must map regions to non-empty lists of zone names")
        cloud = data.get("cloud_regions", {}) or {}
        if not isinstance(cloud, Mapping) or not all(r in regions and isinstance(v, str) for r, v in cloud.items()):
            raise ConfigError(f"{where}: 'cloud_regions' must map regions to region names")
        return cls(clusters=dict(clusters), namespace=data.get("namespace", "kerp"),
                   deployment=data.get("deployment", "kerp-app"), nodes_per_region=nodes, interval_s=float(interval),
                   zones={r: tuple(z) for r, z in zones.items()}, cloud_regions=dict(cloud))


@dataclass
class PodRecord:
    """The Pod object standing for one slot's process (pid None: Pending, no process yet)."""

    name: str
    pid: int | None
    node: str | None
    ready: bool = False
    probed_at: float = 0.0
    started_at: float = 0.0
    ready_since: float | None = None
    published: dict[str, Any] = field(default_factory=dict)


class KubeController:
    """Keeps each region's Deployment, ReplicaSet, Pods and Nodes in step with the supervisor's processes."""

    def __init__(self, supervisor: Supervisor, spec: KubeSpec) -> None:
        self.sup = supervisor
        self.spec = spec
        self.pods: dict[str, dict[int, PodRecord]] = {r: {} for r in spec.clusters}
        self.nodes: dict[str, list[dict[str, Any]]] = {r: [] for r in spec.clusters}
        self.synced: dict[str, bool] = {r: False for r in spec.clusters}
        self.lock = asyncio.Lock()
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._probe = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S)
        self._failing: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._dep_status: dict[str, Any] = {}
        self._rs_uid: dict[str, str] = {}
        self.template_hash = hashlib.sha1(repr(sorted((r.name, r.command) for r in supervisor.config.regions)).encode()).hexdigest()[:10]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for region, url in self.spec.clusters.items():
            self._clients[region] = httpx.AsyncClient(base_url=url, timeout=5.0)
        self.sup.can_start = self.can_start
        self.sup.pod_of = self.pod_json
        await self.tick()
        self._task = asyncio.create_task(self._loop(), name="kubernetes controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for c in self._clients.values():
            await c.aclose()
        await self._probe.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.interval_s)
            await self.tick()

    async def tick(self) -> None:
        for region in self.spec.clusters:
            try:
                async with self.lock:
                    await self.reconcile_region(region)
                if self._failing.pop(region, False):
                    log.info("%s: Kubernetes API reachable again", region)
            except (httpx.HTTPError, KubeApiError) as e:
                if not self._failing.get(region):
                    log.warning("%s: Kubernetes API: %s (processes keep running; retrying)", region, e)
                self._failing[region] = True
                self.synced[region] = False
            except Exception:
                log.exception("%s: reconcile failed", region)

    # ------------------------------------------------------------------ hooks used by the supervisor
    def can_start(self, rep: Replica) -> bool:
        """A process may start only where a Node can take its Pod (no schedulable Node: the Pod stays Pending)."""
        if not self.synced.get(rep.region):
            return True  # API not reachable (yet): keep the app running, the Pods follow when it is
        return bool(self._schedulable(rep.region))

    def pod_json(self, region: str, slot: int) -> dict[str, Any] | None:
        rec = self.pods.get(region, {}).get(slot)
        if rec is None:
            return None
        return {"pod": rec.name, "node": rec.node, "zone": self.spec.zone_of(region, rec.node) if rec.node else None,
                "ready": rec.ready}

    # ------------------------------------------------------------------ node loss (the lab carries what a cloud would do)
    def _node_status_patch(self, lost: bool) -> dict[str, Any]:
        """A lost node: its kubelet stopped posting status (Ready Unknown), the node controller tainted it
        unreachable and it is cordoned. Back: Ready, schedulable, untainted."""
        now = _iso()
        if lost:
            cond = {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status (the lab lost this node).",
                    "lastHeartbeatTime": now, "lastTransitionTime": now}
            spec = {"unschedulable": True, "taints": [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now}]}
        else:
            cond = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "lab node (no kubelet: always Ready)", "lastHeartbeatTime": now, "lastTransitionTime": now}
            spec = {"unschedulable": None, "taints": None}
        return {"spec": spec, "status": {"conditions": [cond]}}

    async def set_node_lost(self, region: str, node: str, lost: bool) -> dict[str, Any]:
        """Lose `node` of `region` (NotReady, cordoned, tainted; the app processes of its Pods die with it, the
        supervisor starts them again and they are placed on a Ready node) or bring it back (Ready, schedulable;
        with `lost` False and every Pod elsewhere, one Pod is moved back, as a descheduler would)."""
        if region not in self.spec.clusters:
            raise UnknownNodeError(f"unknown region {region!r}")
        killed: list[dict[str, Any]] = []
        moved: list[str] = []
        async with self.lock:
            if await self._call(region, "GET", f"/api/v1/nodes/{node}", ok404=True) is None:
                raise UnknownNodeError(f"no node {node!r} in region {region!r}")
            await self._call(region, "PATCH", f"/api/v1/nodes/{node}", self._node_status_patch(lost))
            self.nodes[region] = (await self._call(region, "GET", "/api/v1/nodes"))["items"]  # type: ignore[index]
            for slot, rec in sorted(self.pods[region].items()):
                rep = self.sup.replicas[region][slot]
                if lost and rec.node == node and rec.pid is not None and rep.alive and rep.proc is not None:
                    signal_group(rep.proc.pid, signal.SIGKILL)  # the machine it ran on is gone
                    killed.append({"slot": slot, "pod": rec.name, "pid": rec.pid})
                    log.warning("%s: node %s lost: killed pid %d of pod %s", region, node, rec.pid, rec.name)
            if not lost:
                here = [r for r in self.pods[region].values() if r.node == node]
                ready = [(slot, r) for slot, r in sorted(self.pods[region].items()) if r.pid is not None and r.ready]
                if not here and len(ready) >= 2:
                    slot, rec = ready[-1]
                    log.info("%s: node %s back: moving pod %s onto it", region, node, rec.name)
                    await self.sup.kill_replica(self.sup.replicas[region][slot])
                    moved.append(rec.name)
        return {"region": region, "node": node, "zone": self.spec.zone_of(region, node), "lost": lost,
                "killed": killed, "moved": moved}

    def node_states(self, region: str) -> list[dict[str, Any]]:
        """Each Node of `region` as the controller last read it: name, zone, ready, unschedulable, pods."""
        out = []
        for n in sorted(self.nodes.get(region, []), key=lambda n: n["metadata"]["name"]):
            name = n["metadata"]["name"]
            out.append({"name": name, "zone": self.spec.zone_of(region, name),
                        "ready": any(c.get("type") == "Ready" and c.get("status") == "True"
                                     for c in (n.get("status") or {}).get("conditions", [])),
                        "unschedulable": bool((n.get("spec") or {}).get("unschedulable")),
                        "pods": sorted(r.name for r in self.pods.get(region, {}).values() if r.node == name)})
        return out

    # ------------------------------------------------------------------ API helpers
    def _ns(self, plural: str, name: str = "", apps: bool = False) -> str:
        base = f"/apis/apps/v1/namespaces/{self.spec.namespace}/{plural}" if apps else f"/api/v1/namespaces/{self.spec.namespace}/{plural}"
        return f"{base}/{name}" if name else base

    async def _call(self, region: str, method: str, path: str, body: Any = None, ok404: bool = False) -> dict[str, Any] | None:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else None
        r = await self._clients[region].request(method, path, json=body, headers=headers)
        if r.status_code == 404 and ok404:
            return None
        if r.status_code == 409 and method == "POST":
            return None
        if r.status_code >= 400:
            raise KubeApiError(f"{method} {path}: HTTP {r.status_code}: {r.text[:200]}")
        return r.json()

    def _labels(self) -> dict[str, str]:
        return {"app": self.spec.deployment}

    def _container(self, region: str) -> dict[str, Any]:
        spec = self.sup.specs[region]
        return {"name": "app", "image": f"drill-lab/{self.spec.deployment}:{self.template_hash}", "command": list(spec.command),
                "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}}, "ports": [{"name": "http", "containerPort": 8080}]}

    # ------------------------------------------------------------------ scale (the supervisor's HTTP API)
    async def set_replicas(self, region: str, replicas: int) -> None:
        """Write spec.replicas of the region's Deployment (the source of truth), then scale the processes."""
        async with self.lock:
            await self._call(region, "PATCH", self._ns("deployments", f"{self.spec.deployment}/scale", apps=True),
                             {"spec": {"replicas": replicas}})
            await self.sup.apply_scale(region, replicas)

    # ------------------------------------------------------------------ reconcile
    async def _ensure_static(self, region: str) -> dict[str, Any]:
        """Namespace, Nodes, ReplicaSet and Deployment exist; returns the Deployment."""
        if not self.synced[region]:
            await self._call(region, "POST", "/api/v1/namespaces", {"metadata": {"name": self.spec.namespace}})
        nodes = (await self._call(region, "GET", "/api/v1/nodes"))["items"]  # type: ignore[index]
        names = {n["metadata"]["name"] for n in nodes}
        for i in range(1, self.spec.nodes_per_region + 1):
            name = f"{region}-node-{i}"
            if name not in names:
                nodes.append(await self._call(region, "POST", "/api/v1/nodes", self._node(region, name)) or {})
        self.nodes[region] = [n for n in nodes if n]
        rs_name = f"{self.spec.deployment}-{self.template_hash}"
        rs = None
        if not self.synced[region] or region not in self._rs_uid:  # else checked by its status patch (404: resync)
            rs = await self._call(region, "GET", self._ns("replicasets", rs_name, apps=True), ok404=True)
        else:
            rs = {"metadata": {"uid": self._rs_uid[region]}}
        if rs is None:
            rs = await self._call(region, "POST", self._ns("replicasets", apps=True), self._replicaset(region, rs_name))
            rs = rs or await self._call(region, "GET", self._ns("replicasets", rs_name, apps=True))
        self._rs_uid[region] = rs["metadata"]["uid"]  # type: ignore[index]
        dep = await self._call(region, "GET", self._ns("deployments", self.spec.deployment, apps=True), ok404=True)
        if dep is None:
            dep = await self._call(region, "POST", self._ns("deployments", apps=True), self._deployment(region))
            dep = dep or await self._call(region, "GET", self._ns("deployments", self.spec.deployment, apps=True))
            self._dep_status.pop(region, None)
        return dep  # type: ignore[return-value]

    async def reconcile_region(self, region: str) -> None:
        dep = await self._ensure_static(region)
        reps = self.sup.replicas[region]
        want = (dep.get("spec") or {}).get("replicas")
        if not isinstance(want, int) or want < 0:
            want = self.sup.desired[region]
        want = min(want, len(reps))  # replicas beyond the slots are not run (status.replicas shows it)
        if want != self.sup.desired[region]:
            log.info("%s: Deployment spec.replicas %d -> scaling from %d", region, want, self.sup.desired[region])
            await self.sup.apply_scale(region, want)
        self.synced[region] = True
        desired = self.sup.desired[region]
        listed = (await self._call(region, "GET", self._ns("pods") + f"?labelSelector=app%3D{self.spec.deployment}"))["items"]  # type: ignore[index]
        live = {p["metadata"]["name"]: p for p in listed}
        records = self.pods[region]
        kills = []
        # 1. a Pod deleted or evicted through the API: its process goes (the supervisor starts a replacement)
        for slot, rec in list(records.items()):
            if rec.name not in live:
                del records[slot]
                rep = reps[slot]
                if rec.pid is not None and rep.alive and rep.proc is not None and rep.proc.pid == rec.pid:
                    log.info("%s: pod %s deleted through the API: stopping pid %d", region, rec.name, rec.pid)
                    kills.append(self.sup.kill_replica(rep))
        if kills:
            await asyncio.gather(*kills)
        now = time.time()
        # 2. every slot's process <-> its Pod
        probes = []
        for rep in reps:
            rec = records.get(rep.slot)
            pid = rep.proc.pid if rep.alive and rep.proc is not None else None
            if pid is not None:
                if rec is not None and rec.pid is not None and rec.pid != pid:
                    await self._delete_pod(region, rec)  # a process that died loses its Pod
                    records.pop(rep.slot, None)
                    rec = None
                if rec is None:
                    rec = PodRecord(name=self._pod_name(), pid=pid, node=self._pick_node(region), started_at=rep.started_at or now)
                    records[rep.slot] = rec
                elif rec.pid is None:  # the Pending Pod got its process
                    rec.pid, rec.node, rec.started_at = pid, rec.node or self._pick_node(region), rep.started_at or now
                if not rec.ready or now - rec.probed_at >= READY_RECHECK_S:
                    probes.append(self._probe_ready(rep, rec))
            else:
                if rec is not None and rec.pid is not None:
                    await self._delete_pod(region, rec)  # the process is gone: so is its Pod
                    records.pop(rep.slot, None)
                    rec = None
                if rep.slot < desired and not rep.stopping and rec is None:
                    records[rep.slot] = PodRecord(name=self._pod_name(), pid=None, node=None)  # Pending
                elif rep.slot >= desired and rec is not None:
                    await self._delete_pod(region, rec)
                    records.pop(rep.slot, None)
        if probes:
            await asyncio.gather(*probes)
        # 3. publish the Pods, remove the ones nothing stands behind
        mine = {rec.name for rec in records.values()}
        for name in set(live) - mine:
            log.info("%s: deleting pod %s (no process of the lab stands behind it)", region, name)
            await self._call(region, "DELETE", self._ns("pods", name), ok404=True)
        for slot, rec in records.items():
            body = self._pod(region, slot, rec)
            if rec.name not in live:
                await self._call(region, "POST", self._ns("pods"), body)
                rec.published = body
            elif rec.published != body:
                await self._call(region, "PATCH", self._ns("pods", rec.name), {"spec": body["spec"], "status": body["status"],
                                                                                 "metadata": {"annotations": body["metadata"]["annotations"]}})
                rec.published = body
        # 4. Deployment and ReplicaSet status
        status = self._deployment_status(region, dep)
        if status != self._dep_status.get(region) or status != dep.get("status"):
            await self._call(region, "PATCH", self._ns("deployments", self.spec.deployment, apps=True) + "/status", {"status": status})
            rs_status = {k: status[k] for k in ("replicas", "readyReplicas", "availableReplicas")}
            await self._call(region, "PATCH", self._ns("replicasets", f"{self.spec.deployment}-{self.template_hash}", apps=True),
                             {"spec": {"replicas": desired}, "status": {**rs_status, "fullyLabeledReplicas": status["replicas"],
                                                                        "observedGeneration": 1}})
            self._dep_status[region] = status

    async def _delete_pod(self, region: str, rec: PodRecord) -> None:
        await self._call(region, "DELETE", self._ns("pods", rec.name), ok404=True)

    async def _probe_ready(self, rep: Replica, rec: PodRecord) -> None:
        try:
            ok = (await self._probe.get(rep.url + "/health")).status_code == 200
        except httpx.HTTPError:
            ok = False
        rec.probed_at = time.time()
        if ok and not rec.ready:
            rec.ready_since = rec.probed_at
        rec.ready = ok

    def _schedulable(self, region: str) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.nodes[region]
                      if not (n.get("spec") or {}).get("unschedulable")
                      and any(c.get("type") == "Ready" and c.get("status") == "True" for c in (n.get("status") or {}).get("conditions", [])))

    def _pick_node(self, region: str) -> str | None:
        """The schedulable Node with the fewest of the region's Pods (no scheduler: this is the lab's whole rule)."""
        candidates = self._schedulable(region)
        if not candidates:
            return None
        load = {n: 0 for n in candidates}
        for rec in self.pods[region].values():
            if rec.node in load:
                load[rec.node] += 1
        return min(candidates, key=lambda n: (load[n], n))

    def _pod_name(self) -> str:
        return f"{self.spec.deployment}-{self.template_hash}-{secrets.token_hex(3)[:5]}"

    # ------------------------------------------------------------------ object bodies
    def _node(self, region: str, name: str) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "drill.lab/region": region,
                  "topology.kubernetes.io/zone": self.spec.zone_of(region, name)}
        if region in self.spec.cloud_regions:
            labels["topology.kubernetes.io/region"] = self.spec.cloud_regions[region]
        return {"metadata": {"name": name, "labels": labels},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "message": "lab node (no kubelet: always Ready)",
                                           "lastHeartbeatTime": _iso(), "lastTransitionTime": _iso()}],
                           "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                           "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                           "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}

    def _template(self, region: str) -> dict[str, Any]:
        return {"metadata": {"labels": self._labels()},
                "spec": {"containers": [self._container(region)],
                         "volumes": [{"name": "jwt-secret", "secret": {"secretName": "kerp-jwt"}}]}}

    def _deployment(self, region: str) -> dict[str, Any]:
        return {"metadata": {"name": self.spec.deployment, "namespace": self.spec.namespace, "labels": self._labels(),
                             "annotations": {"drill.lab/region": region}},
                "spec": {"replicas": self.sup.desired[region], "selector": {"matchLabels": self._labels()},
                         "template": self._template(region),
                         "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}},
                "status": {}}

    def _replicaset(self, region: str, name: str) -> dict[str, Any]:
        labels = {**self._labels(), "pod-template-hash": self.template_hash}
        return {"metadata": {"name": name, "namespace": self.spec.namespace, "labels": labels,
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": self.spec.deployment,
                                                  "uid": "lab", "controller": True, "blockOwnerDeletion": True}]},
                "spec": {"replicas": self.sup.desired[region], "selector": {"matchLabels": labels},
                         "template": {**self._template(region), "metadata": {"labels": labels}}},
                "status": {"replicas": 0}}

    def _pod(self, region: str, slot: int, rec: PodRecord) -> dict[str, Any]:
        rep = self.sup.replicas[region][slot]
        running = rec.pid is not None
        ready = running and rec.ready
        t = _iso(rec.started_at) if running else None
        scheduled = rec.node is not None
        conds = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                  **({} if scheduled else {"reason": "Unschedulable", "message": "0 nodes available: all nodes are unschedulable"})},
                 {"type": "Initialized", "status": "True" if running else "False"},
                 {"type": "ContainersReady", "status": "True" if ready else "False"},
                 {"type": "Ready", "status": "True" if ready else "False",
                  **({"lastTransitionTime": _iso(rec.ready_since)} if ready and rec.ready_since else {})}]
        container = {"name": "app", "image": self._container(region)["image"], "imageID": "", "ready": ready,
                     "restartCount": 0, "started": running,
                     "state": {"running": {"startedAt": t}} if running else {"waiting": {"reason": "ContainerCreating"}}}
        spec = {**self._template(region)["spec"], "restartPolicy": "Always"}
        spec["containers"] = [{**self._container(region), "ports": [{"name": "http", "containerPort": rep.spec.port}]}]
        if rec.node:
            spec["nodeName"] = rec.node
        return {"metadata": {"name": rec.name, "namespace": self.spec.namespace,
                             "labels": {**self._labels(), "pod-template-hash": self.template_hash, "drill.lab/slot": str(slot)},
                             "annotations": {"drill.lab/pid": str(rec.pid or ""), "drill.lab/url": rep.url},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{self.spec.deployment}-{self.template_hash}",
                                                  "uid": self._rs_uid.get(region, ""), "controller": True, "blockOwnerDeletion": True}]},
                "spec": spec,
                "status": {"phase": "Running" if running else "Pending", "conditions": conds,
                           **({"podIP": rep.spec.host, "hostIP": rep.spec.host, "startTime": t, "containerStatuses": [container]}
                              if running else {})}}

    def _deployment_status(self, region: str, dep: dict[str, Any]) -> dict[str, Any]:
        records = self.pods[region]
        spec_replicas = (dep.get("spec") or {}).get("replicas", 0)
        replicas = len(records)
        ready = sum(1 for r in records.values() if r.pid is not None and r.ready)
        available = ready >= spec_replicas
        complete = available and replicas == spec_replicas
        prev = {c["type"]: c for c in (dep.get("status") or {}).get("conditions", [])}

        def cond(ctype: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
            old = prev.get(ctype)
            since = old["lastTransitionTime"] if old and old.get("status") == ("True" if ok else "False") else _iso()
            return {"type": ctype, "status": "True" if ok else "False", "reason": reason, "message": message,
                    "lastTransitionTime": since, "lastUpdateTime": since}

        slots = len(self.sup.replicas[region])
        return {"observedGeneration": (dep.get("metadata") or {}).get("generation", 1),
                "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                "unavailableReplicas": max(0, spec_replicas - ready),
                "conditions": [
                    cond("Available", available, "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                         "Deployment has minimum availability." if available else "Deployment does not have minimum availability."),
                    cond("Progressing", True, "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                         f'ReplicaSet "{self.spec.deployment}-{self.template_hash}" has successfully progressed.' if complete
                         else (f"{spec_replicas} replicas wanted, the lab has {slots} slots" if spec_replicas > slots
                               else f'ReplicaSet "{self.spec.deployment}-{self.template_hash}" is progressing.')),
                ]}


class KubeApiError(LabError):
    """The lab's Kubernetes API answered an error (the controller retries on its next tick)."""


class UnknownNodeError(KubeApiError):
    """A request named a node the region's cluster does not have."""
