"""End-to-end drills through `drill run` and plain `chaos run` against the real lab: reports and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.timing import scaled
from tests.cli import drill_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CATALOG = {"authentication", "api-gateway", "voucher-service", "tax-invoice-service"}


drill = drill_cli  # `drill ARGS` with state=LAB (timeout 300 s unless given)


def wait_for_fault(timeline: Path, proc: subprocess.Popen, seconds: float) -> bool:
    """Poll the run's timeline.jsonl until an injected fault appears (False if the run ends or time runs out)."""
    return wait_for_events(timeline, proc, seconds, lambda e: e["kind"] == "fault" and
                           e["data"].get("phase", "inject") == "inject") is not None


def wait_for_events(timeline: Path, proc: subprocess.Popen, seconds: float, *matches) -> dict | None:
    """Poll the run's timeline.jsonl (written as events happen) until events matching `matches` have appeared in
    that order; the last one, or None if the run ends or time runs out first."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        i = 0
        for line in (timeline.read_text().splitlines() if timeline.exists() else ()):
            try:
                e = json.loads(line)
            except ValueError:  # the line being written
                continue
            if matches[i](e):
                i += 1
                if i == len(matches):
                    return e
        time.sleep(0.02)
    return None


def assert_lab_on_primary(lab) -> None:
    topo = lab.status()
    assert topo["healthy"], {k: v for k, v in topo["health"].items() if not v.get("alive")}
    assert topo["router"]["active_region"] == "primary"
    assert topo["health"]["postgres_primary"]["role"] == "primary"
    assert topo["health"]["postgres_dr"]["role"] == "standby"
    assert topo["health"]["postgres_dr"]["wal_receiver"] == "streaming"


def test_ci_smoke_passes_and_writes_every_report_file(drill_lab, tmp_path):
    out = tmp_path / "report"
    r = drill("run", "ci-smoke", "--report-dir", str(out), "--approve", "dr_region_switch=Kim (CTO)",
              state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("report.json", "report.md", "report.html", "junit.xml", "journal.json", "timeline.jsonl"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "passed" and report["exit_code"] == 0
    assert {o["service"] for o in report["objectives"]} == CATALOG
    for o in report["objectives"]:
        assert o["met"] is True
        assert 0 < o["rto_measured_s"] < o["rto_target_s"]
        assert o["rpo_target_s"] >= 0
    w = report["writes"]
    assert w["attempted"] > 100 and w["acknowledged"] > 100
    assert w["attempted"] == w["acknowledged"] + w["indeterminate"] + w.get("failed", 0)
    assert w["unexpected"] == 0
    checks = {i["check"]: i["status"] for i in report["integrity"]}
    assert checks and all(v != "fail" for v in checks.values()), checks
    phases = {c["phase"] for c in report["checklist"]}
    assert phases == {"pre_test", "during_test", "post_test"}
    for c in report["checklist"]:
        assert c["status"] == "pass", c
        assert c["observed"]
    kinds = {e["kind"] for e in report["timeline"]}
    assert {"fault", "failover", "check", "note"} <= kinds
    journal = json.loads((out / "journal.json").read_text())
    assert journal["status"] == "completed"
    # the detector sampled the plan's indicators during the drill: a region loss is at least level 3
    det = report["detector"]
    assert det["expected_level"] == 3 and det["max_level"] >= 3, {k: det[k] for k in ("max_level", "expected_level")}
    assert det["match"] is (det["max_level"] == 3)
    levels = [x["level"] for x in det["samples"]]
    assert levels[0] == 0, levels  # sampling started with the workload, before the fault
    peak = det["peak"]["indicators"]
    assert peak["database_primary"] == {**peak["database_primary"], "healthy": False, "weight": 10}
    assert sum(i["weight"] for i in peak.values() if i["healthy"] is False) == det["peak"]["failed_weight"]
    assert any(e["kind"] == "detector" for e in report["timeline"])
    assert "Disaster level" in (out / "report.html").read_text()
    # who approved, when; the escalation matrix on the drill clock; RTO with and without the CTO's decision time
    assert report["approvers"][0]["gate"] == "dr_region_switch" and report["approvers"][0]["who"] == "Kim (CTO)"
    assert any(e["event"] == "approval: dr_region_switch by Kim (CTO)" for e in report["timeline"])
    esc = report["escalation"]
    assert esc["steps"][0]["level"] == 1 and esc["steps"][0]["who"] == "On-Call Engineer"
    assert any(e["kind"] == "escalation" for e in report["timeline"])
    (dec,) = esc["decisions"]
    assert (dec["who"], dec["plan_s"], dec["approved_by"]) == ("CTO / Engineering Director", 3600.0, "Kim (CTO)")
    assert dec["drill_s"] == pytest.approx(3600 * esc["time_scale"])
    for row in esc["rto"]:
        assert row["rto_with_decision_s"] == pytest.approx(row["rto_s"] + 3600, abs=0.01)
    # the lab's metrics endpoint serves the detector's latest sample
    metrics = httpx.get(drill_lab.topology()["metrics"]["url"], timeout=5).text
    assert "kerp_disaster_level{region=" in metrics and "kerp_indicator_database_primary{" in metrics
    from tests.integration._allure import assert_experiment_allure_result

    assert_experiment_allure_result(out)  # one Allure result, a step per activity, tags, attachments
    assert_lab_on_primary(drill_lab)


def test_impossible_rto_makes_the_drill_exit_3(drill_lab, tmp_path):
    overrides = tmp_path / "impossible.yaml"
    overrides.write_text("services:\n  authentication:\n    rto: 1ms\n")
    out = tmp_path / "report"
    r = drill("run", "ci-smoke", "--report-dir", str(out), "--plan-overrides", str(overrides), "--tier", "platinum",
              state=drill_lab.state)
    assert r.returncode == 3, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["exit_code"] == 3 and report["status"] == "failed"
    auth = next(o for o in report["objectives"] if o["service"] == "authentication")
    assert auth["met"] is False and auth["rto_target_s"] == pytest.approx(0.001)
    assert "RTO" in auth["reason"]
    # --tier platinum (1h/15m) tightens the catalog's own targets (voucher 120m/60m, tax invoices 180m/60m)
    assert report["tier"]["name"] == "platinum"
    by = {o["service"]: o for o in report["objectives"]}
    assert by["voucher-service"]["rto_target_s"] == 3600 and by["voucher-service"]["rpo_target_s"] == 900
    assert by["tax-invoice-service"]["rto_target_s"] == 3600
    assert by["tax-invoice-service"]["targets"]["rto_from"] == "tier platinum"
    fns = {f["function"]: f for f in report["business_functions"]}
    assert fns["tax invoice issuing"]["status"] == "probed" and fns["tax invoice issuing"]["rto_target_s"] == 3600
    assert fns["report generation"]["status"] == "not_modelled"
    assert "objectives missed" in (out / "report.md").read_text()
    assert_lab_on_primary(drill_lab)


def test_planted_integrity_fault_makes_the_drill_exit_4(drill_lab, tmp_path):
    from harness.checks import plant

    dsn = drill_lab.topology()["regions"]["primary"]["postgres"]["dsn"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        planted = plant.plant_unbalanced_voucher(conn)
    try:
        out = tmp_path / "report"
        r = drill("run", "ci-smoke", "--report-dir", str(out), state=drill_lab.state)
        assert r.returncode == 4, r.stderr[-3000:]
        report = json.loads((out / "report.json").read_text())
        assert report["exit_code"] == 4
        balanced = next(i for i in report["integrity"] if i["check"] == "vouchers_balanced")
        assert balanced["status"] == "fail"
        assert str(planted) in balanced["offending"] or str(planted) in balanced["details"]
    finally:
        with psycopg.connect(drill_lab.topology()["regions"]["primary"]["postgres"]["dsn"], autocommit=True) as conn:
            conn.execute("DELETE FROM voucher_lines WHERE voucher_id = %s", (planted,))
            conn.execute("DELETE FROM vouchers WHERE id = %s", (planted,))
    assert_lab_on_primary(drill_lab)


def test_plain_chaos_run_twice_leaves_the_lab_on_primary(drill_lab, tmp_path):
    env = dict(os.environ, DRILL_STATE_DIR=str(drill_lab.state), DRILL_REPORTS_DIR=str(tmp_path / "reports"))
    for i in range(2):
        r = subprocess.run(["chaos", "--no-version-check", "run", "--rollback-strategy", "always",
                            "--journal-path", str(tmp_path / f"journal-{i}.json"),
                            str(ROOT / "experiments" / "region-failover.json")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        journal = json.loads((tmp_path / f"journal-{i}.json").read_text())
        assert journal["status"] == "completed" and not journal["deviated"]
        assert_lab_on_primary(drill_lab)
        assert httpx.get(drill_lab.topology()["router"]["url"] + "/health", timeout=3).status_code == 200
    reports = list((tmp_path / "reports").glob("*/report.json"))
    assert len(reports) == 2


def test_unknown_target_is_a_usage_error(tmp_path):
    r = drill("run", "no-such-profile", state=tmp_path / "state")
    assert r.returncode == 2
    assert "unknown target 'no-such-profile'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_interrupted_drill_rolls_back_and_exits_130(drill_lab, tmp_path, sig):
    import signal

    out = tmp_path / "report"
    env = dict(os.environ, DRILL_STATE_DIR=str(drill_lab.state))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "ci-smoke", "--report-dir", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_fault(out / "timeline.jsonl", proc, scaled(480)), "the drill never injected its fault"
    proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=scaled(480))
    assert proc.returncode == 130, stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "aborted" and report["exit_code"] == 130
    assert_lab_on_primary(drill_lab)
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    assert FaultLedger(ledger_path(drill_lab.state)).active() == []


# -- interruption, safety before the first fault, dry run, preflight ------------------------------
def _ledger_active(lab) -> list:
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    return FaultLedger(ledger_path(lab.state)).active()


def _timeline(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines() if line.strip()]


def _router_flips(lab) -> int:
    return len(httpx.get(lab.topology()["router"]["url"] + "/_router/state", timeout=3).json().get("flips", []))


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_interrupted_feature_rolls_back_and_exits_130(drill_lab, tmp_path, sig):
    import signal

    out = tmp_path / "report"
    env = dict(os.environ, DRILL_STATE_DIR=str(drill_lab.state))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "features/region_failover.feature",
                             "--report-dir", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_fault(out / "timeline.jsonl", proc, scaled(480)), "the scenario never injected its fault"
    proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=scaled(480))
    assert proc.returncode == 130, stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "aborted" and report["exit_code"] == 130
    assert any(e["event"].startswith(f"{sig} received") for e in report["timeline"])
    assert_lab_on_primary(drill_lab)
    assert _ledger_active(drill_lab) == []


def test_a_drill_without_its_approval_is_refused_before_any_fault(drill_lab, tmp_path):
    flips = _router_flips(drill_lab)
    out = tmp_path / "refused"
    r = drill("run", "annual-full-dr", "--scenario", "region-failover", "--report-dir", str(out), state=drill_lab.state)
    assert r.returncode == 5, r.stderr[-3000:]
    assert "not injecting: 'annual-full-dr' needs approval for dr_region_switch" in " ".join(r.stderr.split())
    report = json.loads((out / "report.json").read_text())
    assert report["exit_code"] == 5
    assert any("not injecting:" in str(e["event"]) + json.dumps(e["data"]) for e in report["timeline"])
    assert [e for e in _timeline(out) if e["kind"] == "fault"] == []
    assert [e for e in _timeline(out) if e["kind"] == "op"] == []  # not even the workload started
    assert _router_flips(drill_lab) == flips and _ledger_active(drill_lab) == []
    assert_lab_on_primary(drill_lab)

    out = tmp_path / "approved"
    r = drill("run", "annual-full-dr", "--scenario", "region-failover", "--approve", "dr_region_switch",
              "--report-dir", str(out), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["approvals"] == ["dr_region_switch"]
    assert_lab_on_primary(drill_lab)


def test_an_environment_off_the_allow_list_is_refused_before_any_fault(drill_lab, tmp_path):
    experiment = json.loads((ROOT / "experiments" / "region-failover.json").read_text())
    experiment["configuration"]["drill_environment"] = "staging"
    path = tmp_path / "staging.json"
    path.write_text(json.dumps(experiment))
    out = tmp_path / "report"
    r = drill("run", str(path), "--approve", "dr_region_switch", "--report-dir", str(out), state=drill_lab.state)
    assert r.returncode == 5, r.stderr[-3000:]
    assert "environment 'staging' is not on the allow-list" in " ".join(r.stderr.split())
    assert [e for e in _timeline(out) if e["kind"] in ("fault", "op")] == []
    assert _ledger_active(drill_lab) == []
    assert_lab_on_primary(drill_lab)


def test_dry_run_injects_nothing_and_passes(drill_lab, tmp_path):
    from harness import backup

    s3 = drill_lab.topology()["s3"]["endpoint_url"]
    backups = len(backup.list_backups(endpoint_url=s3))
    flips = _router_flips(drill_lab)
    out = tmp_path / "report"
    r = drill("run", "ci-smoke", "--dry-run", "--report-dir", str(out), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dry_run"] is True and report["status"] == "passed" and report["exit_code"] == 0
    faults = [e for e in _timeline(out) if e["kind"] == "fault"]
    assert faults and all(e["data"].get("phase") == "planned" for e in faults)
    assert {e["event"] for e in faults} == {"fail_region"}
    skipped = {c["id"] for c in report["checklist"] if c["status"] == "skipped"}
    assert {"failover_started", "traffic_switched", "service_health", "failback"} <= skipped
    assert not [c for c in report["checklist"] if c["status"] == "fail"]
    assert len(backup.list_backups(endpoint_url=s3)) == backups  # nothing written to S3
    assert _router_flips(drill_lab) == flips and _ledger_active(drill_lab) == []
    assert_lab_on_primary(drill_lab)


def test_faults_of_another_run_in_the_ledger_refuse_the_start(drill_lab, tmp_path):
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    ledger = FaultLedger(ledger_path(drill_lab.state))
    entry = ledger.record("switch_region", "router:primary", "harness.targets.router.actions:clear_override",
                          {"configuration": {"drill_state_dir": str(drill_lab.state)}}, run_id="an-earlier-run")
    try:
        out = tmp_path / "report"
        r = drill("run", "ci-smoke", "--report-dir", str(out), state=drill_lab.state)
        assert r.returncode == 1, r.stderr[-3000:]
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "active faults in the ledger: run `drill recover`" in lines[0], r.stderr
        assert not out.exists()
        r = drill("run", "features/region_failover.feature", "--report-dir", str(out), state=drill_lab.state)
        assert r.returncode == 1 and "active faults in the ledger: run `drill recover`" in r.stderr
    finally:
        r = drill("recover", "--state-dir", str(drill_lab.state), state=drill_lab.state)
    assert r.returncode == 0, r.stderr
    assert entry.id not in {e.id for e in _ledger_active(drill_lab)}


def test_a_bad_plan_override_is_refused_before_the_lab_is_touched(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  authentication:\n    rto: banana\n")
    state = tmp_path / "never-created"
    r = drill("run", "ci-smoke", "--plan-overrides", str(bad), "--report-dir", str(tmp_path / "r"), state=state)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "banana" in r.stderr and "Traceback" not in r.stderr
    assert not state.exists() and not (tmp_path / "r").exists()


def test_a_failed_step_fails_the_feature_run_even_when_the_report_would_pass(drill_lab, tmp_path):
    feature = tmp_path / "failing_step.feature"
    text = (ROOT / "features" / "region_failover.feature").read_text()
    feature.write_text(text.rstrip() + "\n    And the global endpoint routes to the DR region after 1 seconds\n")
    out = tmp_path / "report"
    r = drill("run", str(feature), "--report-dir", str(out), state=drill_lab.state)
    assert r.returncode == 1, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["exit_code"] == 1 and report["status"] == "failed"
    assert all(o["met"] for o in report["objectives"])  # the measurements alone would have passed
    assert "scenario step(s) failed: And the global endpoint routes to the DR region after 1 seconds" in report["error"]
    assert_lab_on_primary(drill_lab)
    assert _ledger_active(drill_lab) == []
