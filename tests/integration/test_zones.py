"""The catalog's drills inside the primary region: node loss (level 1), availability-zone loss and database failover
(level 2), each run once end to end on the shared session lab (`drill run <experiment>` in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def drill(*args: str, state: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DRILL_STATE_DIR=str(state))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _faults(report: dict, phase: str = "inject") -> list[dict]:
    return [e for e in report["timeline"] if e["kind"] == "fault" and e["data"].get("phase") == phase]


def _lab_as_found(lab) -> None:
    """Primary region active and healthy, fault ledger empty, replicas streaming, every node ready."""
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    status = lab.status()
    assert status["healthy"], {k: v for k, v in status["health"].items() if not v.get("alive")}
    assert status["router"]["active_region"] == "primary"
    assert status["health"]["postgres_primary"]["role"] == "primary"
    assert status["health"]["postgres_dr"]["wal_receiver"] == "streaming"
    assert not FaultLedger(ledger_path(lab.state)).active()
    import httpx

    nodes = httpx.get(status["supervisor"]["url"] + "/nodes", timeout=5).json()
    assert all(n["ready"] and not n["unschedulable"] for ns in nodes.values() for n in ns), nodes


def test_node_loss_reschedules_the_replicas_without_failover(drill_lab, tmp_path):
    r = drill("run", "experiments/node-loss.json", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    (fault,) = _faults(report)
    assert fault["event"] == "lose_node" and fault["data"]["zone"] == "ap-northeast-2a" and fault["data"]["pods"]
    assert [e["event"] for e in _faults(report, "revert")] == ["lose_node"]
    # the lost node's replicas ran again on the other node, in the other zone; the services answered again within
    # level 1's downtime on the drill clock (5 min x 0.01)
    (check,) = [e for e in report["timeline"] if e["kind"] == "check" and "rescheduled off primary-node-1" in e["event"]]
    assert check["data"]["ok"] and check["data"]["drill_downtime_s"] == pytest.approx(3.0)
    assert check["data"]["services_back_s"] <= 3.0
    assert check["data"]["replicas"] and {x["node"] for x in check["data"]["replicas"]} == {"primary-node-2"}
    assert {x["zone"] for x in check["data"]["replicas"]} == {"ap-northeast-2c"}
    # no failover: no failover event, the database and the router never moved, nothing lost
    assert not [e for e in report["timeline"] if e["kind"] == "failover"]
    assert report["writes"]["lost"] == 0 and report["writes"]["acknowledged"] > 50
    assert all(o["met"] for o in report["objectives"])
    _lab_as_found(drill_lab)
