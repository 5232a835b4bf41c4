"""The lab's Kubernetes API proven with real clients: the kubernetes Python client, kubectl and chaosk8s
against `drill lab up`; Pods, Deployments and Nodes follow the supervisor's real app processes.

One lab for the module, in its own state dir; tests run in file order and each leaves the primary region
at 2 replicas; `drill lab down` is the last test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from harness.lab import procs
from tests.labs import lab_state_dir
from tests.timing import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def drill(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, Any]]:
    with lab_state_dir("drill-kube-test-") as state:
        r = drill("lab", "up", "--json", "--state-dir", str(state))
        assert r.returncode == 0, f"drill lab up failed ({r.returncode}): {r.stderr}"
        topo = json.loads(r.stdout)
        yield {"state": state, "topology": topo, "kube": topo["kubernetes"],
               "ports": json.loads((state / "lab.json").read_text())["ports"]}


@pytest.fixture(scope="module")
def core(lab: dict[str, Any]) -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=lab["kube"]["kubeconfig"], context="primary"))


@pytest.fixture(scope="module")
def apps(lab: dict[str, Any]) -> Any:
    from kubernetes import client, config

    return client.AppsV1Api(config.new_client_from_config(config_file=lab["kube"]["kubeconfig"], context="primary"))


CHAOSK8S_CALL = """
import importlib, json, sys
module, func = sys.argv[1].rsplit(".", 1)
print(json.dumps(getattr(importlib.import_module(module), func)(**json.loads(sys.argv[2]))))
"""


def chaosk8s(lab: dict[str, Any], activity: str, context: str = "primary", **kwargs: Any) -> Any:
    """Call a chaosk8s activity as `chaos run` does: a process started with KUBECONFIG set (the kubernetes
    client reads it once, at import), the context in its secrets. Returns its JSON result."""
    import os

    kwargs["secrets"] = {"KUBERNETES_CONTEXT": context}
    env = {**os.environ, "KUBECONFIG": lab["kube"]["kubeconfig"]}
    r = subprocess.run([sys.executable, "-c", CHAOSK8S_CALL, activity, json.dumps(kwargs)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, f"{activity} failed: {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def kubectl(lab: dict[str, Any], *args: str, context: str = "primary", timeout: float = 60) -> str:
    r = subprocess.run([KUBECTL or "kubectl", "--kubeconfig", lab["kube"]["kubeconfig"], "--context", context, *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}"
    return r.stdout


def regions(lab: dict[str, Any]) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{lab['ports']['supervisor']}/regions", timeout=5).json()


def processes(lab: dict[str, Any], region: str = "primary") -> dict[str, int]:
    """pod name -> pid of the region's running app processes, as the supervisor reports them."""
    return {r["pod"]: r["pid"] for r in regions(lab)[region]["replicas"] if r["alive"] and r.get("pod")}


def ready_pods(core: Any, ns: str) -> dict[str, Any]:
    pods = core.list_namespaced_pod(ns, label_selector="app=kerp-app").items
    return {p.metadata.name: p for p in pods
            if p.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}


def settled(lab: dict[str, Any], core: Any, n: int, region: str = "primary") -> dict[str, int] | None:
    """The region's processes when exactly n run, each with a Ready Pod of the API and no other Pod; else None."""
    procs_ = processes(lab, region)
    if len(procs_) != n:
        return None
    if core is not None:
        pods = core.list_namespaced_pod(lab["kube"]["namespace"], label_selector="app=kerp-app").items
        if {p.metadata.name for p in pods} != set(procs_) or set(ready_pods(core, lab["kube"]["namespace"])) != set(procs_):
            return None
    return procs_


# --------------------------------------------------------------------------- topology


def test_topology_names_the_api_the_kubeconfig_and_its_contexts(lab: dict[str, Any]) -> None:
    kube = lab["kube"]
    assert kube["api_url"].startswith("http://127.0.0.1:")
    assert kube["contexts"] == {"primary": "primary", "dr": "dr"}
    assert kube["namespace"] == "kerp"
    assert Path(kube["kubeconfig"]).parent == lab["state"].resolve()
    assert httpx.get(kube["api_url"] + "/version", timeout=2).status_code == 200
    r = drill("lab", "status", "--json", "--state-dir", str(lab["state"]))
    status = json.loads(r.stdout)
    assert status["kubernetes"] == kube
    assert status["health"]["kubeapi"]["alive"] is True
    assert status["health"]["kubernetes_primary"]["alive"] is True
    assert status["health"]["kubernetes_dr"]["alive"] is True


# --------------------------------------------------------------------------- selectors


def test_client_and_kubectl_see_exactly_the_labs_pods_for_a_selector(lab: dict[str, Any], core: Any) -> None:
    ns = lab["kube"]["namespace"]
    running = poll(lambda: settled(lab, core, 2), 20, "2 primary processes with Ready Pods")
    pods = core.list_namespaced_pod(ns, label_selector="app=kerp-app").items
    assert {p.metadata.name for p in pods} == set(running)
    for p in pods:  # each Pod is a real process of the lab
        assert int(p.metadata.annotations["drill.lab/pid"]) == running[p.metadata.name]
        assert p.metadata.owner_references[0].kind == "ReplicaSet"
        assert p.spec.node_name.startswith("primary-node-")
        assert p.spec.volumes
    assert core.list_namespaced_pod(ns, label_selector="app=nothing").items == []
    assert core.list_namespaced_pod(ns, label_selector="app in (kerp-app),tier!=db").items != []
    assert core.list_namespaced_pod(ns, field_selector="status.phase=Failed").items == []
    # the other region is another cluster: none of these Pods there
    if KUBECTL:
        names = kubectl(lab, "get", "pods", "-l", "app=kerp-app", "-o", "name").split()
        assert {n.removeprefix("pod/") for n in names} == set(running)
        assert kubectl(lab, "get", "pods", "-l", "app=nothing", "-o", "name").split() == []
        assert kubectl(lab, "get", "pods", "-l", "app=kerp-app", "-o", "name", context="dr").split() == []


def test_a_pod_deleted_through_the_api_kills_its_process_and_a_ready_replacement_follows(lab: dict[str, Any], core: Any) -> None:
    ns = lab["kube"]["namespace"]
    before = poll(lambda: settled(lab, core, 2), 20, "2 primary processes with Ready Pods")
    victim, pid = sorted(before.items())[0]
    t0 = time.monotonic()
    core.delete_namespaced_pod(victim, ns)
    poll(lambda: not procs.alive(pid), 10, f"pid {pid} of the deleted pod {victim} gone")
    after = poll(lambda: settled(lab, core, 2), 10, "a Ready replacement pod")
    elapsed = time.monotonic() - t0
    assert victim not in after and pid not in after.values()
    print(f"\n[figure] pod deleted -> Ready replacement: {elapsed:.2f} s")


def test_a_process_that_dies_loses_its_pod_and_a_replacement_appears(lab: dict[str, Any], core: Any) -> None:
    import os
    import signal

    before = poll(lambda: settled(lab, core, 2), 20, "2 primary processes with Ready Pods")
    name, pid = sorted(before.items())[0]
    os.kill(pid, signal.SIGKILL)
    after = poll(lambda: settled(lab, core, 2), 15, "a replacement for the killed process")
    assert name not in after


# --------------------------------------------------------------------------- scaling: one source of truth


@needs_kubectl
def test_kubectl_scale_starts_and_stops_processes_and_the_deployment_status_follows(lab: dict[str, Any], core: Any, apps: Any) -> None:
    ns = lab["kube"]["namespace"]
    before = poll(lambda: settled(lab, core, 2), 20, "2 primary processes")
    kubectl(lab, "scale", "deployment/kerp-app", "--replicas=3")
    three = poll(lambda: settled(lab, core, 3), 20, "3 primary processes")
    assert set(before) < set(three)
    kubectl(lab, "rollout", "status", "deployment/kerp-app", "--timeout=30s")

    def status_is(n: int) -> bool:
        d = apps.read_namespaced_deployment("kerp-app", ns)
        s = d.status
        return (d.spec.replicas == n and s.replicas == n and s.ready_replicas == n and s.available_replicas == n
                and s.updated_replicas == n and s.observed_generation == d.metadata.generation
                and {c.type: c.status for c in s.conditions} == {"Available": "True", "Progressing": "True"})

    poll(lambda: status_is(3), 10, "Deployment status at 3")
    assert regions(lab)["primary"]["desired"] == 3
    kubectl(lab, "scale", "deployment/kerp-app", "--replicas=1")
    one = poll(lambda: settled(lab, core, 1), 20, "1 primary process")
    for pid in set(three.values()) - set(one.values()):
        assert not procs.alive(pid)
    poll(lambda: status_is(1), 10, "Deployment status at 1")
    # the supervisor's own scale API writes the same spec.replicas
    r = httpx.put(f"http://127.0.0.1:{lab['ports']['supervisor']}/regions/primary", json={"replicas": 2}, timeout=15)
    assert r.status_code == 200, r.text
    assert apps.read_namespaced_deployment("kerp-app", ns).spec.replicas == 2
    poll(lambda: settled(lab, core, 2), 20, "2 primary processes")
    poll(lambda: status_is(2), 10, "Deployment status at 2")


@needs_kubectl
def test_kubectl_cordon_drain_and_uncordon_move_the_pods(lab: dict[str, Any], core: Any) -> None:
    ns = lab["kube"]["namespace"]
    poll(lambda: settled(lab, core, 2), 20, "2 primary processes")
    kubectl(lab, "cordon", "primary-node-1")
    assert core.read_node("primary-node-1").spec.unschedulable is True
    kubectl(lab, "drain", "primary-node-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s", timeout=90)
    after = poll(lambda: settled(lab, core, 2), 20, "2 primary processes after the drain")
    assert {core.read_namespaced_pod(n, ns).spec.node_name for n in after} == {"primary-node-2"}
    kubectl(lab, "uncordon", "primary-node-1")
    assert not core.read_node("primary-node-1").spec.unschedulable


# --------------------------------------------------------------------------- chaosk8s


def test_chaosk8s_terminate_pods_and_probes(lab: dict[str, Any], core: Any) -> None:
    ns = lab["kube"]["namespace"]
    before = poll(lambda: settled(lab, core, 2), 20, "2 primary processes")
    assert chaosk8s(lab, "chaosk8s.pod.probes.pods_in_phase", label_selector="app=kerp-app", phase="Running", ns=ns) is True
    assert chaosk8s(lab, "chaosk8s.deployment.probes.deployment_available_and_healthy", name="kerp-app", ns=ns) is True
    chaosk8s(lab, "chaosk8s.pod.actions.terminate_pods", label_selector="app=kerp-app", ns=ns, qty=1)
    after = poll(lambda: settled(lab, core, 2), 15, "a replacement for the terminated pod")
    gone = set(before) - set(after)
    assert len(gone) == 1 and not procs.alive(before[gone.pop()])
    # a selector matching nothing terminates nothing
    chaosk8s(lab, "chaosk8s.pod.actions.terminate_pods", label_selector="app=nothing", ns=ns, qty=1)
    assert settled(lab, core, 2) == after


def test_chaosk8s_scale_deployment_in_the_dr_region(lab: dict[str, Any]) -> None:
    """DR apps run but are not Ready while their database is a read-only standby: the Pods and the
    Deployment status say so, and chaosk8s's health probe sees it."""
    from kubernetes import client, config

    ns = lab["kube"]["namespace"]
    api = config.new_client_from_config(config_file=lab["kube"]["kubeconfig"], context="dr")
    dr_core, dr_apps = client.CoreV1Api(api), client.AppsV1Api(api)
    chaosk8s(lab, "chaosk8s.deployment.actions.scale_deployment", "dr", name="kerp-app", replicas=2, ns=ns)

    def running_unready() -> dict[str, int] | None:
        procs_ = processes(lab, "dr")
        pods = {p.metadata.name: p for p in dr_core.list_namespaced_pod(ns, label_selector="app=kerp-app").items}
        if len(procs_) != 2 or set(pods) != set(procs_) or any(p.status.phase != "Running" for p in pods.values()):
            return None
        return procs_

    running = poll(running_unready, 20, "2 DR processes with Running Pods")
    urls = [r["url"] for r in regions(lab)["dr"]["replicas"] if r["alive"]]
    poll(lambda: all(httpx.get(u + "/health", timeout=2).status_code == 503 for u in urls), 20,
         "DR apps serving /health: 503 (their database is a standby)")
    time.sleep(1.0)  # a few reconcile ticks: the probes have run
    assert ready_pods(dr_core, ns) == {}
    status = dr_apps.read_namespaced_deployment("kerp-app", ns).status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (2, 0, 0)
    assert {c.type: c.status for c in status.conditions}["Available"] == "False"
    assert chaosk8s(lab, "chaosk8s.deployment.probes.deployment_available_and_healthy", "dr", name="kerp-app", ns=ns,
                    raise_on_unavailable=False) is False
    chaosk8s(lab, "chaosk8s.deployment.actions.scale_deployment", "dr", name="kerp-app", replicas=0, ns=ns)
    poll(lambda: settled(lab, dr_core, 0, "dr") == {}, 20, "no DR process")
    assert not any(procs.alive(pid) for pid in running.values())
    assert chaosk8s(lab, "chaosk8s.deployment.probes.deployment_available_and_healthy", "dr", name="kerp-app", ns=ns) is True


def test_chaosk8s_cordon_and_drain_nodes(lab: dict[str, Any], core: Any) -> None:
    ns = lab["kube"]["namespace"]
    poll(lambda: settled(lab, core, 2), 20, "2 primary processes")
    assert chaosk8s(lab, "chaosk8s.node.actions.cordon_node", name="primary-node-2") is not None
    assert core.read_node("primary-node-2").spec.unschedulable is True
    chaosk8s(lab, "chaosk8s.node.actions.uncordon_node", name="primary-node-2")
    assert not core.read_node("primary-node-2").spec.unschedulable
    # wherever the pods are now, draining the node with the most of them moves them all to the other one
    on: dict[str, list[str]] = {}
    for name in settled(lab, core, 2) or {}:
        on.setdefault(core.read_namespaced_pod(name, ns).spec.node_name, []).append(name)
    busiest = max(on, key=lambda n: len(on[n]))
    other = ({"primary-node-1", "primary-node-2"} - {busiest}).pop()
    chaosk8s(lab, "chaosk8s.node.actions.drain_nodes", name=busiest, timeout=60)
    after = poll(lambda: settled(lab, core, 2), 20, "2 primary processes after the drain")
    assert {core.read_namespaced_pod(n, ns).spec.node_name for n in after} == {other}
    chaosk8s(lab, "chaosk8s.node.actions.uncordon_node", name=busiest)
    assert not core.read_node(busiest).spec.unschedulable


# --------------------------------------------------------------------------- down


def test_lab_down_leaves_no_api_process_or_port(lab: dict[str, Any]) -> None:
    st = json.loads((lab["state"] / "lab.json").read_text())
    pid = st["pids"]["kubeapi"]
    r = drill("lab", "down", "--state-dir", str(lab["state"]))
    assert r.returncode == 0, r.stderr
    assert not procs.alive(pid)
    for region in ("primary", "dr"):
        assert not procs.port_open(st["ports"][f"kubeapi_{region}"])
    assert not Path(lab["kube"]["kubeconfig"]).exists()
