"""Pure parts of the Kubernetes target and of chaosk8s in drill runs: readiness readings, context -> region,
and how `drill run` points chaosk8s at an environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from harness.config.environment import load_environment_file
from harness.drill import chaosk8s_guard
from harness.drill.runner import _point_chaosk8s
from harness.errors import UsageError
from harness.targets.kubernetes import ops

ROOT = Path(__file__).resolve().parents[2]


def _pod(phase: str, ready: str, deleting: bool = False) -> k8s.V1Pod:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", deletion_timestamp="2026-01-01T00:00:00Z" if deleting else None),
                     status=k8s.V1PodStatus(phase=phase, conditions=[k8s.V1PodCondition(type="Ready", status=ready)]))


def _node(ready: str, unschedulable: bool | None) -> k8s.V1Node:
    return k8s.V1Node(spec=k8s.V1NodeSpec(unschedulable=unschedulable),
                      status=k8s.V1NodeStatus(conditions=[k8s.V1NodeCondition(type="Ready", status=ready)]))


def test_pod_and_node_readiness() -> None:
    assert ops.pod_ready(_pod("Running", "True")) is True
    assert ops.pod_ready(_pod("Running", "False")) is False      # a DR app whose database is a standby
    assert ops.pod_ready(_pod("Pending", "False")) is False
    assert ops.pod_ready(_pod("Running", "True", deleting=True)) is False
    assert ops.node_ready(_node("True", None)) is True
    assert ops.node_ready(_node("True", True)) is False          # cordoned
    assert ops.node_ready(_node("False", None)) is False


@pytest.fixture()
def k8s_env(tmp_path: Path):
    d = yaml.safe_load((ROOT / "environments" / "example-k8s.yaml").read_text())
    d["kubernetes"]["kubeconfig"] = str(tmp_path / "kubeconfig")
    (tmp_path / "k8s.yaml").write_text(yaml.safe_dump(d))
    return load_environment_file(tmp_path / "k8s.yaml")


def test_a_context_maps_to_its_plan_region(k8s_env, tmp_path: Path) -> None:
    cfg = {"drill_environment_file": k8s_env.source}
    assert chaosk8s_guard.region_of_context("kerp-tokyo", cfg) == "dr"
    assert chaosk8s_guard.region_of_context(None, cfg) == "primary"  # the kubeconfig's current context
    with pytest.raises(UsageError, match="'somebody-else' is no region's context"):
        chaosk8s_guard.region_of_context("somebody-else", cfg)


def test_drill_run_points_chaosk8s_at_the_environment(k8s_env, monkeypatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    exp = {"configuration": {"kerp_namespace": "kerp"},
           "secrets": {"kubernetes-primary": {"KUBERNETES_CONTEXT": "primary"},
                       "kubernetes-dr": {"KUBERNETES_CONTEXT": "dr"}, "other": {"TOKEN": "x"}}}
    _point_chaosk8s(exp, k8s_env, None)
    import os

    assert os.environ["KUBECONFIG"] == k8s_env.data["kubernetes"]["kubeconfig"]
    assert exp["secrets"] == {"kubernetes-primary": {"KUBERNETES_CONTEXT": "kerp-seoul"},
                              "kubernetes-dr": {"KUBERNETES_CONTEXT": "kerp-tokyo"}, "other": {"TOKEN": "x"}}
    assert exp["configuration"]["kerp_namespace"] == "kerp-system"


def test_the_chaosk8s_faults_have_our_rollbacks() -> None:
    fault, describe = chaosk8s_guard.FAULTS["chaosk8s.pod.actions:terminate_pods"]
    target, (func, kwargs) = describe("primary", {"label_selector": "app=kerp-app", "ns": "kerp"})
    assert (fault, target, func.__name__, kwargs) == ("terminate_pods", "pod:primary:app=kerp-app", "wait_pods_ready",
                                                      {"region": "primary", "label_selector": "app=kerp-app"})
    fault, describe = chaosk8s_guard.FAULTS["chaosk8s.node.actions:drain_nodes"]
    target, (func, kwargs) = describe("primary", {"name": "primary-node-1"})
    assert (fault, target, func.__name__) == ("drain_node", "node:primary:primary-node-1", "uncordon_node")
    # the chaosk8s uncordon reverts exactly that target
    faults, describe = chaosk8s_guard.REVERTS["chaosk8s.node.actions:uncordon_node"]
    assert "drain_node" in faults and describe("primary", {"name": "primary-node-1"})[0] == target
