"""The lab Kubernetes API's selector rules and the supervisor's `kubernetes` config block (pure, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.lab.kubeapi import field_matches, label_matches, parse_clusters, table
from harness.lab.supervisor import SupervisorConfig

LABELS = {"app": "kerp-app", "tier": "web"}
POD = {"metadata": {"name": "p1", "namespace": "kerp"}, "spec": {"nodeName": "primary-node-1", "unschedulable": True},
       "status": {"phase": "Running"}}


@pytest.mark.parametrize("selector, expected", [
    ("", True), ("app=kerp-app", True), ("app==kerp-app", True), ("app=other", False), ("app!=kerp-app", False),
    ("missing!=x", True), ("app in (a, kerp-app)", True), ("app notin (kerp-app)", False), ("tier", True),
    ("!tier", False), ("!missing", True), ("app=kerp-app,tier=db", False), ("app in (kerp-app),tier!=db", True),
])
def test_label_selector(selector: str, expected: bool) -> None:
    assert label_matches(selector, LABELS) is expected


@pytest.mark.parametrize("selector, expected", [
    ("spec.nodeName=primary-node-1", True), ("spec.nodeName=primary-node-2", False),
    ("status.phase!=Running", False), ("metadata.name=p1,metadata.namespace=kerp", True),
    ("spec.unschedulable=true", True), ("spec.missing=", True),
])
def test_field_selector(selector: str, expected: bool) -> None:
    assert field_matches(selector, POD) is expected


def test_a_field_selector_without_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="nodeName"):
        field_matches("spec.nodeName", POD)


def test_cluster_arguments() -> None:
    assert parse_clusters(["primary=6443", "dr=6444"]) == {"primary": 6443, "dr": 6444}
    with pytest.raises(ValueError, match="'dr:6444'"):
        parse_clusters(["dr:6444"])


def test_pod_table_has_kubectls_columns() -> None:
    t = table("pods", [POD], "7")
    assert [c["name"] for c in t["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert t["rows"][0]["cells"][0] == "p1" and t["rows"][0]["cells"][2] == "Running"


def _config(kube: object) -> dict:
    region = {"replicas": 1, "slots": [{"port": 20001}], "command": ["python", "-c", "pass"]}
    return {"regions": {"primary": region, "dr": {**region, "slots": [{"port": 20002}]}}, "kubernetes": kube}


def test_supervisor_config_reads_the_kubernetes_block() -> None:
    cfg = SupervisorConfig.from_json(_config({"clusters": {"primary": "http://127.0.0.1:1", "dr": "http://127.0.0.1:2"}}),
                                     base_dir=Path("/tmp"))
    assert cfg.kubernetes is not None and cfg.kubernetes.namespace == "kerp" and cfg.kubernetes.nodes_per_region == 2


@pytest.mark.parametrize("kube, named", [
    ({"clusters": {"primary": "http://127.0.0.1:1"}}, "clusters"),
    ({"clusters": {"primary": "http://x", "dr": "http://y"}, "nodes_per_region": 0}, "nodes_per_region 0"),
    ({"clusters": {"primary": "http://x", "dr": "http://y"}, "namespace": "Kerp"}, "'Kerp'"),
])
def test_a_bad_kubernetes_block_is_refused_naming_the_value(kube: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        SupervisorConfig.from_json(_config(kube), base_dir=Path("/tmp"))
