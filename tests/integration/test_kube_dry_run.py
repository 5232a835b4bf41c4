"""`--dry-run` against a real cluster: an environment file like example-k8s whose kubeconfig points at a loopback
port nobody serves; every Kubernetes call is listed in report.json and none reaches the port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def listener() -> Iterator[dict]:
    """A listening socket on a free loopback port that counts the connections it accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    seen = {"port": srv.getsockname()[1], "accepts": 0}
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            seen["accepts"] += 1
            conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield seen
    finally:
        stop.set()
        th.join(timeout=2)
        srv.close()


def test_dry_run_against_a_real_cluster_lists_the_calls_and_makes_none(tmp_path: Path, listener: dict) -> None:
    port = listener["port"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kerp-seoul",
        "clusters": [{"name": n, "cluster": {"server": f"https://127.0.0.1:{port}"}} for n in ("seoul", "tokyo")],
        "users": [{"name": "drill", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "kerp-seoul", "context": {"cluster": "seoul", "user": "drill"}},
                     {"name": "kerp-tokyo", "context": {"cluster": "tokyo", "user": "drill"}}]}))
    env = yaml.safe_load((ROOT / "environments" / "example-k8s.yaml").read_text())
    env["name"] = "dry-k8s"
    env["kubernetes"]["kubeconfig"] = str(kubeconfig)
    env_file = tmp_path / "dry-k8s.yaml"
    env_file.write_text(yaml.safe_dump(env))
    report = tmp_path / "report"
    procenv = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "KERP_"))}
    procenv["DRILL_STATE_DIR"] = str(tmp_path / "no-lab")  # no lab: nothing of the lab is needed either
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(ROOT / "experiments" / "k8s-pod-kill.json"),
                        "--env", str(env_file), "--allow-env", "dry-k8s", "--dry-run", "--report-dir", str(report)],
                       capture_output=True, text=True, timeout=90, env=procenv, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((report / "report.json").read_text())
    calls = data["dry_run_calls"]
    # chaosk8s terminate_pods lists the pods of its selector; our rollback reads the deployments of the file
    assert {(c["operation"], c["resource"]) for c in calls} >= {
        ("GET", "pods in namespace kerp-system"),
        ("GET", "deployments/kerp-api-gateway in namespace kerp-system")}
    assert {c["host"] for c in calls} == {f"https://127.0.0.1:{port}"}
    planned = [e for e in data["timeline"] if e["kind"] == "fault"]
    assert [e["data"]["phase"] for e in planned] == ["planned"]  # the guard saw the fault, nothing was injected
    assert listener["accepts"] == 0
