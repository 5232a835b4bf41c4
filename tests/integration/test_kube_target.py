"""The kubernetes target and the Kubernetes apps plane against the lab's real Kubernetes API (lab-cloud).

One lab for the module, in its own state dir; every test leaves the primary region at 2 ready replicas, the
DR region at 0 and every node schedulable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from harness.errors import LabError
from harness.safety import guard
from tests.timing import poll, scaled
from tests.labs import lab_state_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def drill(*args: str, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, Any]]:
    with lab_state_dir("drill-kube-target-") as state:
        r = drill("lab", "up", "--json", "--state-dir", str(state))
        assert r.returncode == 0, f"drill lab up failed ({r.returncode}): {r.stderr}"
        topo = json.loads(r.stdout)
        yield {"state": state, "topology": topo, "kube": topo["kubernetes"],
               "ports": json.loads((state / "lab.json").read_text())["ports"]}


@pytest.fixture()
def cfg(lab: dict[str, Any]) -> dict[str, Any]:
    return {"drill_state_dir": str(lab["state"]), "drill_environment_kind": "lab-cloud",
            "drill_environment_name": "lab-cloud"}


def alive(lab: dict[str, Any], region: str) -> int:
    data = httpx.get(f"http://127.0.0.1:{lab['ports']['supervisor']}/regions", timeout=5).json()
    return sum(1 for r in data[region]["replicas"] if r["alive"])


def test_apps_plane_scales_through_the_api_and_waits_for_ready(lab: dict[str, Any], cfg: dict[str, Any]) -> None:
    from harness.failover.planes import planes_for
    from harness.targets import _lab
    from harness.targets.kubernetes import probes

    t = _lab.resolve(cfg)
    with t.http() as http:
        planes = planes_for(t, http, cfg)
        assert planes.apps.via == "kubernetes api"
        out = planes.apps.scale("primary", 3)
        assert out["deployments"] == ["kerp-app"] and out["from"] == {"kerp-app": 2}
        # returned only once the API says 3 ready, and the supervisor runs 3 processes
        assert probes.deployment_ready("primary", configuration=cfg)["ready_replicas"] == 3
        assert alive(lab, "primary") == 3
        planes.apps.scale("primary", 2)
        assert probes.deployment_ready("primary", configuration=cfg)["ready_replicas"] == 2
        assert alive(lab, "primary") == 2
        # the DR database is a standby: a DR pod runs but never turns Ready, so the wait cannot succeed
        from harness.failover.planes_kubernetes import KubernetesApps

        short = KubernetesApps(planes.apps.cluster, timeout_s=3)
        with pytest.raises(LabError, match="readyReplicas == 1"):
            short.scale("dr", 1)
        pods = probes.pods_ready("dr", configuration=cfg)
        assert pods["total"] == 1 and pods["ready"] == 0 and pods["phases"] == {"Running": 1}
        planes.apps.scale("dr", 0)
        assert probes.pods_ready("dr", configuration=cfg)["total"] == 0


def test_probes_read_nodes_and_pods(lab: dict[str, Any], cfg: dict[str, Any]) -> None:
    from harness.targets.kubernetes import probes

    nodes = probes.nodes_ready("primary", configuration=cfg)
    assert nodes["total"] == 2 and nodes["ready"] == 2
    pods = probes.pods_ready("primary", configuration=cfg)
    assert pods["label_selector"] == "app=kerp-app" and pods["total"] == 2 and pods["ready"] == 2
    assert probes.pods_ready("primary", label_selector="app=nothing-matches", configuration=cfg)["total"] == 0
    assert probes.deployments_ready("primary", configuration=cfg) is True
    assert probes.deployments_ready("dr", configuration=cfg) is False  # 0 replicas: nothing serves there


def test_cordon_is_a_guarded_fault_and_uncordon_its_rollback(lab: dict[str, Any], cfg: dict[str, Any]) -> None:
    from harness.targets.kubernetes import actions, probes

    out = actions.cordon_node("primary-node-1", "primary", configuration=cfg)
    assert out["changed"] is True
    entry = next(e for e in guard.ledger(cfg).active() if e.id == out["fault_id"])
    assert entry.revert_func.endswith("uncordon_node")
    assert probes.nodes_ready("primary", configuration=cfg)["ready"] == 1
    # under lab-cloud the detector's kubernetes_nodes indicator reads the API: a cordoned node is not ready
    from harness.failover.runbook import detect_level

    ind = detect_level(configuration=cfg)["indicators"]["kubernetes_nodes"]
    assert ind["healthy"] is False and ind["detail"].startswith("kubernetes ready: primary nodes 1/2 pods 2/2")
    back = actions.uncordon_node("primary-node-1", "primary", configuration=cfg)
    assert back["uncordoned"] == ["primary-node-1"] and out["fault_id"] in back["reverted"]
    assert actions.uncordon_node("primary-node-1", "primary", configuration=cfg)["uncordoned"] == []  # idempotent
    assert probes.nodes_ready("primary", configuration=cfg)["ready"] == 2
    ind = detect_level(configuration=cfg)["indicators"]["kubernetes_nodes"]
    assert ind == {"healthy": True, "detail": "kubernetes ready: primary nodes 2/2 pods 2/2, dr nodes 2/2 pods 0/0"}


def test_deleted_pod_is_replaced_and_ready_again(lab: dict[str, Any], cfg: dict[str, Any]) -> None:
    from harness.targets.kubernetes import actions, probes

    before = {p["name"] for p in probes.pods_ready("primary", configuration=cfg)["pods"]}
    out = actions.delete_pod("primary", configuration=cfg)
    assert out["pod"] in before
    back = actions.wait_pods_ready("primary", label_selector=out["label_selector"], timeout_s=scaled(20),
                                   configuration=cfg)
    assert out["fault_id"] in back["reverted"]
    after = poll(lambda: (p := probes.pods_ready("primary", configuration=cfg)) and p["ready"] == 2 and p,
                 20, "2 ready pods")
    assert out["pod"] not in {p["name"] for p in after["pods"]}


# --------------------------------------------------------------------------- chaosk8s experiments

def _faults(report: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in report["timeline"]:
        if e["kind"] == "fault" and e["data"].get("fault_id"):
            out.setdefault(e["data"]["phase"], []).append(e["data"]["fault_id"])
    return out


# k8s-pod-kill and k8s-node-drain run once in CI, in the monthly-chaos profile test (tests/integration/test_profiles.py)
@pytest.mark.parametrize("name,faults", [("k8s-no-schedulable-node", ["cordon_node", "cordon_node", "terminate_pods"])])
def test_chaosk8s_experiment_is_green_through_drill_run_lab_cloud(lab: dict[str, Any], cfg: dict[str, Any],
                                                                  tmp_path: Path, name: str, faults: list[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    r = drill("run", str(root / "experiments" / f"{name}.json"), "--env", "lab-cloud", "--state-dir",
              str(lab["state"]), "--report-dir", str(tmp_path / "r"))
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r.returncode == 0, f"{name}: exit {r.returncode}: {report.get('error')} {r.stderr[-1500:]}"
    # every chaosk8s fault went through the guard (ledger + timeline) and was reverted by the end of the run
    injected = [e["event"] for e in report["timeline"] if e["kind"] == "fault" and e["data"]["phase"] == "inject"]
    assert injected == faults
    ids = _faults(report)
    assert set(ids["inject"]) <= set(ids.get("revert", []))  # by the experiment's rollbacks, not left over
    assert not [e for e in report["timeline"] if "reverted leftover" in e["event"]]
    assert guard.ledger(cfg).active() == []
    # the recovery, measured from the fault on the timeline, within the plan's level-1 expected downtime
    rec = next(e["data"] for e in report["timeline"] if "recovered_s" in e["data"])
    assert rec["ok"] is True and 0 < rec["recovered_s"] <= rec["expected_downtime_s"]
    from harness.targets.kubernetes import probes

    assert probes.nodes_ready("primary", configuration=cfg)["ready"] == 2
    assert probes.pods_ready("primary", configuration=cfg)["ready"] == 2


def test_chaosk8s_experiment_is_green_through_plain_chaos_run(lab: dict[str, Any], cfg: dict[str, Any],
                                                              tmp_path: Path) -> None:
    import os

    root = Path(__file__).resolve().parents[2]
    chaos = Path(sys.executable).with_name("chaos")
    env = {**os.environ, "KUBECONFIG": lab["kube"]["kubeconfig"], "DRILL_STATE_DIR": str(lab["state"])}
    r = subprocess.run([str(chaos), "--log-file", str(tmp_path / "chaos.log"), "run", "--rollback-strategy", "always",
                        "--journal-path", str(tmp_path / "journal.json"), str(root / "experiments" / "k8s-pod-kill.json")],
                       capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "completed" and journal["steady_states"]["after"]["steady_state_met"] is True
    kill = next(x for x in journal["run"] if x["activity"]["name"] == "terminate-one-pod")
    assert kill["status"] == "succeeded" and len(kill["output"]) == 1  # chaosk8s returns the pods it terminated
    assert guard.ledger(cfg).active() == []
