"""The other cadences of the plan run end to end on the lab: monthly chaos, semiannual simulation, tabletop."""

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


def test_monthly_chaos_self_heals_and_isolates_the_popbill_outage(drill_lab, tmp_path):
    r = drill("run", "monthly-chaos", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    faults = {e["event"] for e in report["timeline"] if e["kind"] == "fault" and e["data"].get("phase") == "inject"}
    assert {"kill_replica", "latency", "cut_link"} <= faults
    isolation = [e for e in report["timeline"] if e["event"].startswith("fault isolation")]
    assert isolation and isolation[0]["data"]["status"] == "pass", isolation
    assert report["writes"]["lost"] == 0 and report["writes"]["acknowledged"] > 100
    assert all(o["met"] for o in report["objectives"])
    assert drill_lab.status()["healthy"]


def test_semiannual_simulation_restores_a_backup_and_fails_over(drill_lab, tmp_path):
    r = drill("run", "semiannual-simulation", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    restored = [i for i in report["integrity"] if i["check"].startswith("restored: ")]
    assert restored and all(i["status"] == "pass" for i in restored)
    # the restore read the DR-region copy, made and checked by sha256 first
    copied = [e for e in report["timeline"] if e["event"].startswith("backup copied to the DR region")]
    assert copied and copied[0]["data"]["bucket"] == "kerp-backups-dr" and copied[0]["data"]["verified"] is True
    dr = [e for e in report["timeline"] if e["event"] == "DR copy verified"]
    assert dr and dr[0]["data"]["status"] == "pass", dr
    assert {o["service"] for o in report["objectives"] if o["met"]} == {
        "authentication", "api-gateway", "voucher-service", "tax-invoice-service"}
    assert drill_lab.status()["router"]["active_region"] == "primary"


def test_tabletop_changes_nothing_and_walks_the_runbook(drill_lab, tmp_path):
    assert drill("backup", "create", state=drill_lab.state).returncode == 0  # the nightly backup it checks for
    before = drill_lab.status()
    r = drill("run", "tabletop", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert not [e for e in report["timeline"] if e["kind"] == "fault"]
    walked = [e for e in report["timeline"] if e["event"] == "tabletop walk-through"]
    assert walked and walked[0]["data"]["status"] == "pass"
    assert walked[0]["data"]["services"] == ["authentication", "api-gateway", "voucher-service", "tax-invoice-service"]
    pre = {c["id"]: c["status"] for c in report["checklist"] if c["phase"] == "pre_test"}
    assert pre == {"backups_recent": "pass", "replica_lag": "pass", "dr_cluster_ready": "pass"}
    after = drill_lab.status()
    assert after["pids"] == before["pids"] and after["router"]["active_region"] == "primary"
