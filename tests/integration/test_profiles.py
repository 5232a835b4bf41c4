"""The cadence profiles end to end on the shared lab, each scenario experiment run ONCE in CI.

A profile that draws several scenarios is tested on a short subset (`--scenario`, two level-1 Kubernetes faults);
which scenarios each profile draws is tested without running them (`drill catalog --profile`); every scenario's
full run is its own test. ci-smoke and annual-full-dr (region-failover) run in test_drill_run.py; the composites
(failover policy engine, restore then failover) run as files here; the tabletop profile runs as itself.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.drill import catalog, profiles, runner
from harness.report.profile import worst_exit
from harness.safety import guard
from tests.cli import drill_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def drill(*args: str, state: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return drill_cli(*args, state=state, timeout=timeout)


def test_each_profile_draws_its_share_of_the_catalog(tmp_path):
    every = json.loads(drill("catalog", "--json", state=tmp_path).stdout)["scenarios"]
    r = drill("catalog", "--json", "--profile", "monthly-chaos", state=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [s["id"] for s in json.loads(r.stdout)["scenarios"]] == [
        s["id"] for s in every if s["level"] in (1, 2) and "monthly" in s["cadences"]]
    cat = catalog.scan()  # the other profiles, in process (the same drawing `drill run PROFILE` uses)
    for profile, levels, cadence in (("ci-smoke", {3}, "ci"), ("semiannual-simulation", {3, 4}, "semiannual"),
                                     ("annual-full-dr", {3, 4}, "annual")):
        drawn = [s.id for s in runner.pick_scenarios(profiles.get(profile), cat)]
        assert drawn == [s["id"] for s in every if s["level"] in levels and cadence in s["cadences"]], profile
    assert [s.id for s in runner.pick_scenarios(profiles.get("ci-smoke"), cat)] == ["region-failover"]


def test_monthly_chaos_runs_two_scenarios_one_after_another_and_summarises(drill_lab, tmp_path):
    r = drill("run", "monthly-chaos", "--scenario", "k8s-pod-kill", "--scenario", "k8s-node-drain",
              "--report-dir", str(tmp_path), state=drill_lab.state)
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["kind"] == "profile" and summary["profile"] == "monthly-chaos"
    assert [s["scenario"] for s in summary["scenarios"]] == ["k8s-node-drain", "k8s-pod-kill"]  # catalog order
    assert summary["drawn"] == ["k8s-node-drain", "k8s-pod-kill"] and summary["not_run"] == []
    assert "scenario 1/2: k8s-node-drain" in r.stderr and "scenario 2/2: k8s-pod-kill" in r.stderr
    codes = [s["exit_code"] for s in summary["scenarios"]]
    assert r.returncode == summary["exit_code"] == worst_exit(codes)
    assert r.returncode == 0, [(s["scenario"], s.get("error"), s["downtime_s"]) for s in summary["scenarios"]]
    faults = {"k8s-node-drain": ["drain_node"], "k8s-pod-kill": ["terminate_pods"]}
    for row in summary["scenarios"]:
        rdir = Path(row["report_dir"])
        assert rdir.parent == tmp_path and (rdir / "report.json").is_file()
        report = json.loads((rdir / "report.json").read_text())
        assert report["scenario"]["id"] == row["scenario"] and report["kind"] == "monthly-chaos"
        assert report["run_id"] == row["run_id"] and report["exit_code"] == row["exit_code"]
        # the level's downtime, measured on the timeline: the worst service RTO against 5 min x drill_time_scale
        lvl = report["level_objective"]
        assert lvl["level"] == 1 and lvl["objective_s"] == pytest.approx(300 * lvl["time_scale"])
        worst = max(o["rto_measured_s"] for o in report["objectives"] if o["rto_measured_s"] is not None)
        assert lvl["measured_downtime_s"] == pytest.approx(worst, abs=1e-3) == row["downtime_s"]
        assert lvl["met"] is (lvl["measured_downtime_s"] <= lvl["objective_s"]) and row["level_met"] is lvl["met"]
        # the chaosk8s faults went through the guard under lab-cloud and were rolled back
        assert report["environment"]["name"] == "lab-cloud"
        injected = [e for e in report["timeline"] if e["kind"] == "fault" and e["data"].get("phase") == "inject"]
        assert [e["event"] for e in injected] == faults[row["scenario"]]
        reverted = {e["data"]["fault_id"] for e in report["timeline"]
                    if e["kind"] == "fault" and e["data"].get("phase") == "revert"}
        assert {e["data"]["fault_id"] for e in injected} <= reverted
        rec = next(e["data"] for e in report["timeline"] if "recovered_s" in e["data"])
        assert rec["ok"] is True and 0 < rec["recovered_s"]
        assert report["writes"]["lost"] == 0 and report["writes"]["acknowledged"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "k8s-pod-kill" in md and "01-k8s-node-drain/report.md" in md and (tmp_path / "report.html").is_file()
    assert guard.ledger({"drill_state_dir": str(drill_lab.state)}).active() == []
    status = drill_lab.status()
    assert status["healthy"] and status["router"]["active_region"] == "primary"


def test_the_failover_policy_composite_self_heals_and_isolates_the_popbill_outage(drill_lab, tmp_path):
    r = drill("run", str(ROOT / "experiments" / "monthly-chaos.json"), "--report-dir", str(tmp_path),
              state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    faults = {e["event"] for e in report["timeline"] if e["kind"] == "fault" and e["data"].get("phase") == "inject"}
    assert {"kill_replica", "latency", "cut_link", "cut_replication", "promote_standby", "pause_primary"} <= faults
    isolation = [e for e in report["timeline"] if e["event"].startswith("fault isolation")]
    assert isolation and isolation[0]["data"]["status"] == "pass", isolation
    assert report["writes"]["lost"] == 0 and report["writes"]["acknowledged"] > 100
    assert all(o["met"] for o in report["objectives"])
    # the failover policy: at least 4 of the plan's 7 conditions fired, each with its measured value beyond the
    # threshold held for the duration (on the drill clock), and acted
    decisions = report["decisions"]
    fired = {d["rule"]: d for d in decisions if d["outcome"] == "fired"}
    assert len(fired) >= 4, [(d["rule"], d["outcome"]) for d in decisions]
    for d in fired.values():
        assert d["held_s"] >= d["drill_duration_s"] and d["action"] and "error" not in (d.get("result") or {}), d
        if d["threshold"] is not None:
            assert d["measured"] > d["threshold"], d
    assert fired["latency_p99"]["result"]["to"] == fired["latency_p99"]["result"]["from"] + 1  # scale_up
    assert fired["error_rate"]["result"]["rolled_back"]["fault"] == "cut_link"  # the cut it measured, rolled back
    assert fired["replication_lag_alert"]["result"] == {"alerted": True}
    assert fired["replication_lag_promote_replica"]["result"]["promoted"] is True  # the DR replica
    assert fired["replication_lag_promote_replica"]["duration_s"] == 0 and fired["latency_p99"]["duration_s"] == 300
    assert fired["latency_p99"]["drill_duration_s"] == pytest.approx(3.0)
    # a condition that recovered before its duration: nothing fired
    brief = [d for d in decisions if d["rule"] == "error_rate" and d["outcome"] == "not_fired"]
    assert brief and brief[0]["held_s"] < brief[0]["drill_duration_s"], brief
    # the second database failover inside the cooldown is refused, with the time it clears
    (refused,) = [d for d in decisions if d["rule"] == "connection_failure" and d["outcome"] == "refused"]
    assert refused["action"] == "promote_replica" and "cooldown database_failover" in refused["reason"]
    assert refused["clears_at"] > refused["t"]
    assert sum(1 for e in report["timeline"] if e["kind"] == "decision") == len(decisions)
    assert drill_lab.status()["healthy"]


def test_the_restore_then_failover_composite_restores_a_backup_and_fails_over(drill_lab, tmp_path):
    r = drill("run", str(ROOT / "experiments" / "semiannual-simulation.json"), "--report-dir", str(tmp_path),
              state=drill_lab.state)
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
    listed = next(e for e in report["timeline"] if e["event"] == "catalog listed")
    assert listed["data"]["status"] == "pass" and "region-failover" in listed["data"]["scenarios"]
    assert listed["data"]["levels"]["region-failover"] == 3
    pre = {c["id"]: c["status"] for c in report["checklist"] if c["phase"] == "pre_test"}
    assert pre == {"backups_recent": "pass", "replica_lag": "pass", "dr_cluster_ready": "pass"}
    after = drill_lab.status()
    assert after["pids"] == before["pids"] and after["router"]["active_region"] == "primary"
