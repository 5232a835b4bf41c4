"""The run history store, the trend page's regression flag (a planted slow run), the cadence tracker, and the Allure
result of a Chaos Toolkit run, on planted data (no lab)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.config import load_plan
from harness.report import cadence, history, trend
from harness.report.allure import write_experiment_result

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
ORDINARY = (8.3, 8.0, 8.6, 8.1, 8.5, 8.2, 8.4, 8.45)


def report(run_id: str, kind: str, start: datetime, rto: dict[str, float], rpo: dict[str, float] | None = None,
           status: str = "passed", exit_code: int = 0, dry_run: bool = False) -> dict:
    rpo = rpo or {}
    doc = {"run_id": run_id, "kind": kind, "target": kind, "started_at": start.isoformat(timespec="milliseconds"),
           "ended_at": (start + timedelta(seconds=90)).isoformat(timespec="milliseconds"), "duration_s": 90.0,
           "status": status, "exit_code": exit_code, "environment": {"name": "lab", "kind": "lab"},
           "summary": "planted",
           "objectives": [{"service": svc, "rto_target_s": 3600, "rto_measured_s": v, "rpo_target_s": 3600,
                           "rpo_measured_s": rpo.get(svc), "met": True, "measured": True} for svc, v in rto.items()]}
    if dry_run:
        doc["dry_run"] = True
    return doc


def drill(*args: str, reports: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DRILL_HISTORY"}
    env["DRILL_REPORTS_DIR"] = str(reports)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def store(tmp_path) -> Path:
    """Eight ordinary ci-smoke runs (voucher-service RTO 8.0..8.6 s, none above the p95 of those before it), then a
    planted slow one (30 s)."""
    path = tmp_path / history.STORE_NAME
    for i, v in enumerate(ORDINARY):
        history.record(report(f"r{i}", "ci-smoke", T0 + timedelta(hours=i),
                              {"voucher-service": v, "api-gateway": 7.0}, {"voucher-service": 0.0}), path)
    history.record(report("slow", "ci-smoke", T0 + timedelta(hours=9),
                          {"voucher-service": 30.0, "api-gateway": 7.0}, {"voucher-service": 0.0}), path)
    return path


def test_history_records_one_row_per_run_newest_first_and_rerecording_replaces(store):
    runs = history.runs(store)
    assert [r.run_id for r in runs][:3] == ["slow", "r7", "r6"] and len(runs) == 9
    assert {o.service: o.rto_s for o in runs[0].objectives} == {"voucher-service": 30.0, "api-gateway": 7.0}
    history.record(report("slow", "ci-smoke", T0 + timedelta(hours=9), {"voucher-service": 31.0},
                          status="failed", exit_code=1), store)
    again = history.runs(store)
    assert len(again) == 9 and again[0].status == "failed" and again[0].exit_code == 1
    assert [(o.service, o.rto_s) for o in again[0].objectives] == [("voucher-service", 31.0)]


def test_missing_store_is_one_error_naming_it(tmp_path):
    with pytest.raises(history.HistoryError, match="no run history at"):
        history.runs(tmp_path / "nope.sqlite")


def test_planted_slow_run_is_flagged_against_the_recent_p95(store):
    regs = trend.regressions(history.runs(store))
    assert [(g.run_id, g.service, g.metric) for g in regs] == [("slow", "voucher-service", "RTO")]
    g = regs[0]
    assert g.value_s == 30.0 and g.baseline_runs == 8
    assert g.recent_p95_s == pytest.approx(trend.percentile(ORDINARY, 95), abs=1e-3)


def test_runs_within_the_recent_p95_and_short_baselines_are_not_flagged(tmp_path):
    path = tmp_path / "h.sqlite"
    for i, v in enumerate((10.0, 9.0, 30.0, 8.0, 9.5)):  # 30 s comes with only 2 earlier runs: not judged
        history.record(report(f"r{i}", "ci-smoke", T0 + timedelta(hours=i), {"voucher-service": v}), path)
    assert trend.regressions(history.runs(path)) == []


def test_noise_margin_keeps_a_slightly_slower_run_unflagged(tmp_path):
    path = tmp_path / "h.sqlite"
    for i, v in enumerate((10.0, 10.0, 10.0, 10.4, 11.2)):  # +0.4 s over p95 10.0 is within 5 %; +0.86 s is not
        history.record(report(f"r{i}", "ci-smoke", T0 + timedelta(hours=i), {"voucher-service": v}), path)
    assert [g.run_id for g in trend.regressions(history.runs(path))] == ["r4"]
    assert trend.worse_than(0.2, 0.0) and not trend.worse_than(0.05, 0.0)  # RPO: data lost where none was


def test_percentiles_per_scenario(store):
    rows = {(r["kind"], r["service"]): r for r in trend.scenario_stats(history.runs(store))}
    row = rows[("ci-smoke", "voucher-service")]
    vals = [*ORDINARY, 30.0]
    assert row["runs"] == 9 and row["RTO"]["p50_s"] == pytest.approx(trend.percentile(vals, 50), abs=1e-3)
    assert row["RPO"] == {"n": 9, "p50_s": 0.0, "p95_s": 0.0}
    assert trend.percentile([1, 2, 3, 4], 50) == 2.5 and trend.percentile([5], 95) == 5


def test_drill_trend_writes_the_page_with_the_flag_and_history_json_lists_runs(store):
    page = store.parent / "trend.html"
    r = drill("trend", "--json", reports=store.parent)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["page"] == str(page) and [g["run_id"] for g in data["regressions"]] == ["slow"]
    html = page.read_text()
    assert "Drill trend: REGRESSION" in html and "<code>slow</code> <span class=\"flag\">regression</span>" in html
    assert html.count("<svg") == 2  # RTO and RPO charts, inline
    r = drill("history", "--json", reports=store.parent)
    assert r.returncode == 0 and [x["run_id"] for x in json.loads(r.stdout)][:2] == ["slow", "r7"]


def test_history_without_a_store_is_exit_1_one_line(tmp_path):
    r = drill("history", reports=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no run history at" in r.stderr


def test_cadence_marks_never_run_and_stale_test_types_overdue(tmp_path):
    plan = load_plan()
    assert {t.name: t.frequency for t in plan.test_types} == {"tabletop": "quarterly", "simulation": "semiannual",
                                                             "full": "annual", "chaos": "monthly"}
    now = T0 + timedelta(days=40)
    runs = [history.Run("c1", "monthly-chaos", "", "lab", "passed", 0, T0.isoformat(), None, 60.0, False, None, ""),
            history.Run("t1", "tabletop", "", "lab", "passed", 0, (T0 + timedelta(days=30)).isoformat(), None, 9.0,
                        False, None, ""),
            history.Run("t2", "tabletop", "", "lab", "passed", 0, (T0 + timedelta(days=39)).isoformat(), None, 9.0,
                        True, None, "")]  # a dry run does not count
    rows = {c.test_type: c for c in cadence.cadence(plan.test_types, runs, now=now)}
    assert rows["chaos"].overdue and rows["chaos"].last_run_id == "c1" and rows["chaos"].due_in_s < 0
    assert not rows["tabletop"].overdue and rows["tabletop"].last_run_id == "t1"
    assert rows["tabletop"].age_s == pytest.approx(10 * 86400)
    assert rows["full"].overdue and rows["full"].last_run_id is None and rows["simulation"].overdue


def test_drill_cadence_reads_the_history(tmp_path):
    path = tmp_path / history.STORE_NAME
    history.record(report("m1", "monthly-chaos", datetime.now(timezone.utc) - timedelta(days=2), {"api-gateway": 1.0}),
                   path)
    r = drill("cadence", "--json", reports=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {c["test_type"]: c for c in json.loads(r.stdout)}
    assert rows["chaos"]["last_run_id"] == "m1" and rows["chaos"]["overdue"] is False
    assert rows["full"]["overdue"] is True
    r = drill("cadence", reports=tmp_path)
    assert "OVERDUE" in r.stdout and "m1" in r.stdout


def test_chaos_toolkit_run_result_has_a_step_per_activity_tags_and_attachments(tmp_path):
    rep = report("x1", "ci-smoke", T0, {"voucher-service": 8.0}, status="failed", exit_code=3)
    rep["target"] = "ci-smoke"
    rep["integrity"] = [{"check": "no_orphans", "status": "pass"}]
    (tmp_path / "report.json").write_text(json.dumps(rep))

    def act(kind, name, status="succeeded", **kw):
        return {"activity": {"type": kind, "name": name, "provider": {"module": "harness.x", "func": name}},
                "status": status, "start": T0.isoformat(), "end": (T0 + timedelta(seconds=1)).isoformat(), **kw}

    journal = {"experiment": {"title": "Region failover", "tags": ["dr", "level3"]},
               "steady_states": {"before": {"steady_state_met": True, "probes": [act("probe", "healthy", tolerance_met=True)]},
                                 "after": {"steady_state_met": False, "probes": [act("probe", "healthy", tolerance_met=False)]}},
               "run": [act("action", "fail_region"), act("action", "fail_over", "failed", exception=["boom\n", "Err: x"])],
               "rollbacks": [act("action", "fail_back")]}
    out = write_experiment_result(rep, tmp_path, journal)
    [res] = [json.loads(p.read_text()) for p in out.glob("*-result.json")]
    assert res["name"] == "Region failover" and res["status"] == "failed"
    assert [s["name"] for s in res["steps"]] == ["steady state hypothesis (before the method)", "method",
                                                 "steady state hypothesis (after the method)", "rollbacks"]
    method = res["steps"][1]
    assert [(s["name"], s["status"]) for s in method["steps"]] == [("action: fail_region", "passed"),
                                                                   ("action: fail_over", "failed")]
    assert method["status"] == "failed" and method["steps"][1]["statusDetails"]["message"] == "Err: x"
    assert res["steps"][2]["status"] == "failed"
    assert sorted(x["value"] for x in res["labels"] if x["name"] == "tag") == ["dr", "level3"]
    names = {a["name"]: a for a in res["attachments"]}
    assert set(names) == {"report.json", "timeline chart", "integrity details"}
    assert json.loads((out / names["integrity details"]["source"]).read_text())["integrity"] == rep["integrity"]


def test_report_allure_without_node_or_java_is_one_line_exit_1_and_a_bad_run_is_exit_2(tmp_path):
    rdir = tmp_path / "run1"
    rdir.mkdir()
    rep = report("run1", "ci-smoke", T0, {"api-gateway": 1.0})
    (rdir / "report.json").write_text(json.dumps(rep))
    write_experiment_result(rep, rdir, None)  # refused before Chaos Toolkit ran: one step saying so
    env = {k: v for k, v in os.environ.items() if k not in ("DRILL_ALLURE", "DRILL_HISTORY")}
    env.update(DRILL_REPORTS_DIR=str(tmp_path), PATH=str(tmp_path / "empty-bin"))  # no node, no java, no allure
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", "allure"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "needs Node.js (npm allure 3) or Java (allure-commandline 2)" in r.stderr
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", "allure", "no-such-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'no-such-run' is not a run id" in r.stderr, r.stderr
