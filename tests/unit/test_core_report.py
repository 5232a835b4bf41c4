"""Unit tests of the report model: report.json contract, exit decision, redaction."""

import json

import pytest

from harness.config import load_plan
from harness.core.checklist import evaluate
from harness.core.measure import objective_results, rpo, rto, write_counts
from harness.core.redact import MIN_SECRET_LEN, redact, redact_text, secret_values
from harness.core.report import build_report, decide_exit
from harness.core.timeline import Timeline
from harness.errors import ExitCode, SafetyRefusal

T0 = 1_700_000_000.0
MET = {"met": True}
MISSED = {"met": False}
PASS = {"check": "vouchers_balanced", "status": "pass", "details": ""}
FAIL = {"check": "vouchers_balanced", "status": "fail", "details": "voucher 7 off by 10"}
WARN = {"check": "pg_amcheck", "status": "warning", "details": "not available"}


@pytest.mark.parametrize("objs, integ, kw, expected", [
    ([MET], [PASS, WARN], {}, ("passed", 0)),
    ([], [], {}, ("passed", 0)),
    ([MISSED, MET], [PASS], {}, ("failed", 3)),
    ([MET], [FAIL], {}, ("failed", 4)),
    ([MISSED], [FAIL], {}, ("failed", 4)),
    ([MISSED], [FAIL], {"aborted": True}, ("aborted", 130)),
    # a harness error and a refusal by safety are failures, not aborts: only an interruption aborts
    ([MET], [], {"harness_error": RuntimeError("boom")}, ("failed", 1)),
    ([MET], [], {"harness_error": SafetyRefusal("not injecting: x")}, ("failed", 5)),
    ([MET], [], {"refused": True}, ("failed", 5)),
    ([MET], [PASS], {"checklist": [{"status": "fail"}]}, ("failed", 3)),
    ([MET], [PASS], {"checklist": [{"status": "skipped"}]}, ("passed", 0)),
    # a dry run measures nothing: its unmeasured objectives do not fail it, integrity still does
    ([MISSED], [PASS], {"dry_run": True}, ("passed", 0)),
    ([MISSED], [FAIL], {"dry_run": True}, ("failed", 4)),
])
def test_decide_exit(objs, integ, kw, expected):
    assert decide_exit(objs, integ, **kw) == expected


def test_exit_codes_are_the_documented_ones():
    assert (ExitCode.OBJECTIVES_MISSED, ExitCode.INTEGRITY_VIOLATION, ExitCode.INTERRUPTED) == (3, 4, 130)


def run_timeline():
    tl = Timeline(clock=lambda: T0)
    tl.append("note", "run_started", {"dsn": "postgresql://drill:s3cr3t@127.0.0.1/kerp"}, t=T0)
    for i in range(5):
        tl.append("probe", "http", {"service": "authentication", "ok": True, "latency_s": 0.01}, t=T0 + i * 0.5)
        tl.record_op("w1", "invoke", f"k{i}", t=T0 + i * 0.5)
        tl.record_op("w1", "ok", f"k{i}", t=T0 + i * 0.5 + 0.1)
    tl.append("fault", "kill_primary", {"target": "postgres"}, t=T0 + 3)
    tl.append("failover", "promoted", {}, t=T0 + 4)
    for i in range(6):
        tl.append("probe", "http", {"service": "authentication", "ok": i >= 2, "latency_s": 0.02}, t=T0 + 3.5 + i)
    return tl


def test_build_report_contract():
    plan = load_plan()
    tl = run_timeline()
    final = {"k0", "k1", "k2", "k3"}
    r = rpo(tl.ops, final, T0 + 3)
    rt = rto(tl.events, T0 + 3, "authentication", consecutive=3)
    objs = objective_results(plan, [rt], r)
    doc = build_report(run_id="r1", kind="ci-smoke", target="experiments/x.json", started_at=T0, ended_at=T0 + 10,
                       objectives=objs, writes=write_counts(tl.ops, final), integrity=[PASS],
                       checklist=evaluate(plan.checklist, {}), events=tl.events, rpo=r, rtos=[rt],
                       secrets=["s3cr3t"])
    json.dumps(doc)  # serialisable
    for k in ("run_id", "kind", "target", "started_at", "ended_at", "status", "exit_code", "objectives", "writes",
              "integrity", "checklist", "timeline"):
        assert k in doc
    assert doc["started_at"].startswith("2023-11-14T22:13:20") and doc["started_at"].endswith("+00:00")
    assert doc["status"] == "passed" and doc["exit_code"] == 0
    assert doc["objectives"][0]["service"] == "authentication" and doc["objectives"][0]["rto_measured_s"] == 2.5
    assert doc["writes"] == {**doc["writes"], "attempted": 5, "acknowledged": 5, "lost": 1, "recovered": 0,
                             "unexpected": 0, "indeterminate": 0}
    kinds = {e["kind"] for e in doc["timeline"]}
    assert "op" not in kinds and kinds <= {"fault", "failover", "probe", "check", "note"}
    summary = [e for e in doc["timeline"] if e["event"] == "workload_summary"]
    assert summary and summary[0]["data"]["ops"] == 10 and summary[0]["data"]["by_type"] == {"invoke": 5, "ok": 5}
    ts = [e["ts"] for e in doc["timeline"]]
    assert ts == sorted(ts)
    assert all(c["status"] == "skipped" for c in doc["checklist"])
    assert "s3cr3t" not in json.dumps(doc) and "drill:***@" in json.dumps(doc)
    assert doc["rpo"]["lost"] == 1 and doc["latency"][0]["service"] == "authentication"


def test_build_report_missed_and_bad_integrity_status():
    doc = build_report(run_id="r", kind="k", target="t", started_at=T0, ended_at=T0, objectives=[MISSED])
    assert (doc["status"], doc["exit_code"]) == ("failed", 3)
    assert doc["writes"]["attempted"] == 0 and doc["timeline"] == []
    with pytest.raises(ValueError, match="'maybe'"):
        build_report(run_id="r", kind="k", target="t", started_at=T0, ended_at=T0, integrity=[{"check": "c", "status": "maybe"}])
    with pytest.raises(ValueError, match="'status'"):
        build_report(run_id="r", kind="k", target="t", started_at=T0, ended_at=T0, extra={"status": "x"})


def test_harness_error_in_report():
    doc = build_report(run_id="r", kind="k", target="t", started_at=T0, ended_at=T0,
                       harness_error=RuntimeError("lab down, password hunter2"), secrets=["hunter2"])
    assert doc["exit_code"] == 1 and doc["status"] == "failed" and doc["error"].endswith("password ***")


def test_redact_nested():
    obj = {"a": "x-TOKEN-y", "b": ["TOKEN", ("TOKEN", 1)], "TOKEN": {"n": 12345, "ok": True}, "c": None,
           "s": {"TOKEN-set"}}
    out = redact(obj, ["TOKEN", "12345", ""])
    # strings only: the number 12345 stays a number even though "12345" is a secret
    assert out == {"a": "x-***-y", "b": ["***", ("***", 1)], "***": {"n": 12345, "ok": True}, "c": None,
                   "s": ["***-set"]}
    assert obj["a"] == "x-TOKEN-y"  # input untouched
    assert redact(obj, []) is obj
    # longer secrets first, so one that contains another is redacted whole
    assert redact("pass=abcdefgh", ["abcd", "abcdefgh"]) == "pass=***"
    assert redact_text("key abcd-abcdefgh", ["abcd", "abcdefgh"]) == "key ***-***"


def test_redact_ignores_short_secrets_and_never_touches_numbers():
    assert MIN_SECRET_LEN == 4
    # "abc" is too short to redact safely (it would mangle ordinary words); "3600" is redacted in text only
    doc = {"rto_target_s": 3600, "note": "TTL 3600 s, abc", "n": 3600.0}
    assert redact(doc, ["abc", "3600"]) == {"rto_target_s": 3600, "note": "TTL *** s, abc", "n": 3600.0}
    assert redact(doc, ["abc"]) is doc


def test_build_report_keeps_numbers_equal_to_a_secret():
    plan = load_plan()
    rt = rto([], T0, "authentication")
    objs = objective_results(plan, [rt], None)
    doc = build_report(run_id="r", kind="k", target="t", started_at=T0, ended_at=T0 + 1, objectives=objs,
                       secrets=["3600"])
    assert doc["objectives"][0]["rto_target_s"] == 3600


def test_writes_not_measured_without_a_final_read():
    doc = build_report(run_id="r", kind="k", target="t", started_at=T0, ended_at=T0)
    assert {k: doc["writes"][k] for k in ("attempted", "acknowledged", "lost", "recovered", "unexpected",
                                          "indeterminate")} == dict.fromkeys(
        ("attempted", "acknowledged", "lost", "recovered", "unexpected", "indeterminate"), 0)
    assert doc["writes"]["measured"] is False and "no final read" in doc["writes"]["note"]
    doc = build_report(run_id="r", kind="k", target="t", started_at=T0, ended_at=T0,
                       writes=write_counts([], set()))
    assert doc["writes"]["measured"] is True and "note" not in doc["writes"]


def test_secret_values():
    assert sorted(secret_values({"pg": {"password": "p"}, "aws": {"key": "k", "ids": ["i1"]}})) == ["i1", "k", "p"]
