"""Unit tests of finalize.build: a whole report from a hand-made drill session (no lab, no I/O but a temp dir)."""

from __future__ import annotations

import json

import pytest

from harness.config import load_plan
from harness.core.timeline import Timeline
from harness.drill import finalize
from harness.drill.session import DrillSession

T0 = 1_700_000_000.0  # fault injection
SERVICES = ("authentication", "api-gateway", "voucher-service", "tax-invoice-service")
#: seconds after the fault each service is back (probes fail from +0.5 s until then)
BACK_AT = {"authentication": 3.0, "api-gateway": 2.0, "voucher-service": 2.5, "tax-invoice-service": 4.0}
INTEGRITY_PASS = [{"check": "vouchers_balanced", "status": "pass", "details": "all balanced"},
                  {"check": "audit_sequence_gap_free", "status": "pass", "details": "no gap"}]
OBSERVATIONS = {
    "backups_recent": {"ok": True, "observed": "backup 2 min old"},
    "replica_lag": {"ok": True, "observed": "lag 0.01s"},
    "dr_cluster_ready": {"ok": True, "observed": "supervisor answers"},
    "failover_started": {"ok": True, "observed": "runbook started"},
    "traffic_switched": {"ok": True, "observed": "dr"},
    "service_health": {"ok": True, "observed": "HTTP 200"},
    "failback": {"ok": True, "observed": "back on primary"},
}


def _session(tmp_path, *, probed=SERVICES, integrity=INTEGRITY_PASS, final_read=True, fault=True) -> DrillSession:
    tl = Timeline(clock=lambda: T0)
    s = DrillSession("r-test", "ci-smoke", "experiments/region-failover.json", tmp_path, tl, started_at=T0 - 10,
                     ended_at=T0 + 30)
    # probes every 0.1 s from -2 s to +8 s; the dying primary still answers until +0.5 s
    for i in range(-20, 80):
        dt = round(i * 0.1, 3)
        for svc in probed:
            ok = not (0.5 <= dt < BACK_AT[svc])
            tl.append("probe", svc, {"service": svc, "ok": ok, "latency_s": 0.01,
                                     "region": "primary" if dt < 0.5 else "dr"}, t=T0 + dt)
    if fault:
        tl.append("fault", "fail_region", {"phase": "inject", "target": "region:primary"}, t=T0)
        for name, dt in (("detected", 0.9), ("approved", 1.0), ("promoted", 1.3), ("traffic_switched", 1.8)):
            tl.append("failover", name, {}, t=T0 + dt)
    # vouchers: v1..v4 acknowledged before the fault, v4 (at -0.2 s) lost; v5 after recovery
    for key, dt in (("v1", -3.0), ("v2", -2.0), ("v3", -1.0), ("v4", -0.2), ("v5", 3.0)):
        tl.record_op("w0", "invoke", key, t=T0 + dt - 0.01)
        tl.record_op("w0", "ok", key, t=T0 + dt)
    tl.record_op("w1", "invoke", "v6", t=T0 + 0.1)
    tl.record_op("w1", "indeterminate", "v6", t=T0 + 2.1)
    # tax invoices: acknowledged only (server-assigned numbers); 1:12 (at -0.3 s) lost
    for key, dt in (("1:10", -2.5), ("1:11", -1.5), ("1:12", -0.3), ("1:13", 4.5)):
        tl.record_op("probe-tax-invoice", "ok", key, f="invoice", value={"popbill_ref": f"ref-{key}"}, t=T0 + dt)
    # sessions: all survived
    for key, dt in (("sA", -1.2), ("sB", -0.4), ("sC", 3.5)):
        tl.record_op("probe-authentication", "ok", key, f="session", value={"expires_in": 3600}, t=T0 + dt)
    if final_read:
        tl.append("check", "final read", {"region": "dr"}, t=T0 + 9)
        s.final_keys = {"v1", "v2", "v3", "v5", "v6"}
        s.final_keys_by_f = {"write": s.final_keys, "invoice": {"1:10", "1:11", "1:13"}, "session": {"sA", "sB", "sC"}}
        s.final_read_region = "dr"
    s.integrity = list(integrity)
    s.observations.update(OBSERVATIONS)
    return s


@pytest.fixture(scope="module")
def plan():
    return load_plan()


def test_build_measures_every_catalog_service(tmp_path, plan):
    report = finalize.build(_session(tmp_path), plan)
    json.dumps(report)
    assert (report["status"], report["exit_code"]) == ("passed", 0)
    by = {o["service"]: o for o in report["objectives"]}
    assert set(by) == set(SERVICES)
    # RTO: from the fault to the first streak of 3 successes after the outage (not the early successes)
    for svc, back in BACK_AT.items():
        assert by[svc]["rto_measured_s"] == pytest.approx(back, abs=1e-6), svc
        assert by[svc]["outage_observed"] is True and by[svc]["measured"] is True
    # RPO per service from its own data
    assert by["voucher-service"]["rpo_basis"] == "vouchers"
    assert by["voucher-service"]["lost"] == 1 and by["voucher-service"]["rpo_measured_s"] == pytest.approx(0.8)
    assert by["tax-invoice-service"]["rpo_basis"] == "tax_invoices"
    assert by["tax-invoice-service"]["lost"] == 1 and by["tax-invoice-service"]["rpo_measured_s"] == pytest.approx(1.2)
    assert by["authentication"]["rpo_basis"] == "sessions"
    assert by["authentication"]["lost"] == 0 and by["authentication"]["rpo_measured_s"] == 0.0
    assert by["api-gateway"]["rpo_basis"] == "stateless" and by["api-gateway"]["rpo_measured_s"] is None
    assert all(o["met"] for o in report["objectives"])
    # the voucher ledger is the report's `writes` and top-level `rpo`
    w = report["writes"]
    assert (w["attempted"], w["acknowledged"], w["lost"], w["recovered"], w["unexpected"], w["indeterminate"]) == (
        6, 5, 1, 1, 0, 1)
    assert w["measured"] is True and w["lost_keys"] == ["v4"]
    assert report["rpo"]["lost"] == 1
    assert report["writes_by_kind"]["invoice"]["lost_keys"] == ["1:12"]
    assert report["writes_by_kind"]["session"]["lost"] == 0
    assert report["rpo_by_service"]["api-gateway"] == {"rpo_basis": "stateless"}
    # checklist: measured items pass; every phase is there
    checklist = {c["id"]: c for c in report["checklist"]}
    assert {c["phase"] for c in report["checklist"]} == {"pre_test", "during_test", "post_test"}
    assert checklist["rto_measured"]["status"] == "pass" and "4s" in checklist["rto_measured"]["observed"]
    assert checklist["rpo_measured"]["status"] == "pass" and "tax-invoice-service" in checklist["rpo_measured"]["observed"]
    assert checklist["data_integrity"]["status"] == "pass"
    # the voucher chart series holds voucher ops only
    assert len(report["series"]["writes"]) == 6
    assert "1 acknowledged tax_invoices lost" in report["summary"]


def test_service_not_probed_is_not_measured_and_fails_the_run(tmp_path, plan):
    report = finalize.build(_session(tmp_path, probed=("authentication", "api-gateway", "voucher-service")), plan)
    assert (report["status"], report["exit_code"]) == ("failed", 3)
    by = {o["service"]: o for o in report["objectives"]}
    assert len(by) == 4
    t = by["tax-invoice-service"]
    assert t["met"] is False and t["measured"] is False and t["reason"] == "not measured in this run"
    assert t["rto_measured_s"] is None


def test_objective_missed_exit_3(tmp_path):
    plan = load_plan(overrides={"services": {"tax-invoice-service": {"rto_s": 3}}})
    report = finalize.build(_session(tmp_path), plan)
    assert (report["status"], report["exit_code"]) == ("failed", 3)
    t = next(o for o in report["objectives"] if o["service"] == "tax-invoice-service")
    assert not t["met"] and t["reason"] == "RTO 4s exceeds target 3s"


def test_integrity_violation_exit_4(tmp_path, plan):
    bad = INTEGRITY_PASS + [{"check": "fk_voucher_lines", "status": "fail", "details": "3 orphans"}]
    report = finalize.build(_session(tmp_path, integrity=bad), plan)
    assert (report["status"], report["exit_code"]) == ("failed", 4)
    assert next(c for c in report["checklist"] if c["id"] == "data_integrity")["status"] == "fail"


def test_no_final_read_writes_not_measured(tmp_path, plan):
    report = finalize.build(_session(tmp_path, final_read=False), plan)
    assert report["writes"]["measured"] is False and report["writes"]["lost"] == 0
    by = {o["service"]: o for o in report["objectives"]}
    assert by["voucher-service"]["rpo_measured_s"] is None and by["voucher-service"]["rpo_basis"] == "not_measured"
    assert "no final read of vouchers" in by["voucher-service"]["note"]
    assert "writes not measured" in report["summary"]


def test_refused_and_harness_error_are_failed(tmp_path, plan):
    report = finalize.build(_session(tmp_path), plan, refused=True)
    assert (report["status"], report["exit_code"]) == ("failed", 5)
    s = _session(tmp_path)
    s.harness_error = "activity x failed: boom"
    report = finalize.build(s, plan)
    assert (report["status"], report["exit_code"]) == ("failed", 1) and report["error"] == "activity x failed: boom"
    s = _session(tmp_path)
    s.aborted = True
    assert finalize.build(s, plan)["status"] == "aborted"


def test_dry_run_lists_every_service_unmeasured_without_failing(tmp_path, plan):
    s = _session(tmp_path, fault=False, final_read=False)
    s.timeline.append("fault", "fail_region", {"phase": "planned", "dry_run": True}, t=T0)
    report = finalize.build(s, plan)
    assert (report["status"], report["exit_code"]) == ("passed", 0)
    assert len(report["objectives"]) == 4 and not any(o["measured"] for o in report["objectives"])
    assert all("dry run" in o["note"] for o in report["objectives"])


def test_the_session_check_judges_the_sessions_the_report_judges(tmp_path, plan):
    """A session whose TTL ran out before the final read and one issued under a key the drill revoked are both
    gone from Redis on purpose: neither the report's authentication RPO nor the component check counts them."""
    from harness.drill import component_checks

    s = _session(tmp_path)
    tl = s.timeline
    tl.record_op("probe-authentication", "ok", "sExpired", f="session", value={"expires_in": 1}, t=T0 - 5.0)
    tl.record_op("probe-authentication", "ok", "sRevoked", f="session", value={"expires_in": 3600, "kid": "k-old"},
                 t=T0 - 3.0)
    tl.append("check", "signing key rotated", {"revoked": ["k-old"]}, t=T0 + 4)
    by = {o["service"]: o for o in finalize.build(s, plan)["objectives"]}
    assert by["authentication"]["lost"] == 0
    r = component_checks._lost(s, "session")
    assert (r.lost, r.rpo_s) == (0, 0.0)
    # a real loss still counts in both
    tl.record_op("probe-authentication", "ok", "sLost", f="session", value={"expires_in": 3600}, t=T0 - 0.7)
    assert component_checks._lost(s, "session").lost == 1
    assert {o["service"]: o for o in finalize.build(s, plan)["objectives"]}["authentication"]["lost"] == 1
