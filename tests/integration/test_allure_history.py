"""`drill run ci-smoke` and `drill run features/region_failover.feature` leave Allure results with steps and a row in
the run history; `drill history --json` lists them; `drill report allure` builds one single-file HTML report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def drill(*args: str, state: Path, reports: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DRILL_STATE_DIR=str(state), DRILL_REPORTS_DIR=str(reports))
    env.pop("DRILL_HISTORY", None)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(drill_lab, tmp_path_factory):
    """One ci-smoke run and one feature run into one reports root (their dirs are run id named, as by default)."""
    reports = tmp_path_factory.mktemp("reports")
    done = {}
    for name, target in (("ci-smoke", "ci-smoke"), ("feature", str(ROOT / "features" / "region_failover.feature"))):
        r = drill("run", target, state=drill_lab.state, reports=reports)
        assert r.returncode == 0, r.stderr[-3000:]
        done[name] = r
    return reports


def _results(report_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (report_dir / "allure-results").glob("*-result.json")]


def _run_dir(reports: Path, kind_prefix: str) -> Path:
    dirs = [d for d in reports.iterdir() if d.is_dir() and (d / "report.json").is_file()
            and json.loads((d / "report.json").read_text())["target"].endswith(kind_prefix)]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _attachment_names(result: dict) -> set[str]:
    return {a["name"] for a in result.get("attachments", [])}


def test_ci_smoke_leaves_one_allure_result_with_a_step_per_activity(runs):
    rdir = _run_dir(runs, "ci-smoke")
    [res] = _results(rdir)
    journal = json.loads((rdir / "journal.json").read_text())
    assert res["status"] == "passed" and res["name"] == journal["experiment"]["title"]
    phases = [s["name"] for s in res["steps"]]
    assert phases[0].startswith("steady state hypothesis (before") and "method" in phases and "rollbacks" in phases
    method = next(s for s in res["steps"] if s["name"] == "method")
    assert [s["name"].split(": ", 1)[1] for s in method["steps"]] == [r["activity"]["name"] for r in journal["run"]]
    assert all(s["status"] == "passed" for s in method["steps"])
    tags = {label["value"] for label in res["labels"] if label["name"] == "tag"}
    assert tags == set(journal["experiment"]["tags"])
    assert {"report.json", "timeline chart", "integrity details"} <= _attachment_names(res)
    by_name = {a["name"]: a for a in res["attachments"]}
    attached = json.loads((rdir / "allure-results" / by_name["report.json"]["source"]).read_text())
    assert attached["run_id"] == json.loads((rdir / "report.json").read_text())["run_id"]
    assert (rdir / "allure-results" / by_name["timeline chart"]["source"]).read_text().startswith("<svg")


def test_feature_run_leaves_a_scenario_result_with_gherkin_steps_tags_and_attachments(runs):
    rdir = _run_dir(runs, ".feature")
    [res] = _results(rdir)
    assert res["status"] == "passed"
    assert res["name"] == "The primary region is lost under load and K-ERP recovers in the DR region"
    steps = [s["name"] for s in res["steps"]]
    assert steps[0] == "Given the embedded lab is up"
    assert "When the primary region fails" in steps
    assert "And every service meets its RTO and RPO objectives" in steps
    assert len(steps) == 17 and all(s["status"] == "passed" for s in res["steps"])
    tags = {label["value"] for label in res["labels"] if label["name"] == "tag"}
    assert {"dr_drill", "disaster_level_3"} <= tags
    assert {"report.json", "timeline chart", "integrity details"} <= _attachment_names(res)


def test_history_lists_both_runs_newest_first_with_rto_rpo(runs, drill_lab):
    r = drill("history", "--json", state=drill_lab.state, reports=runs)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["target"].endswith(".feature") for row in rows] == [True, False]  # the feature ran second
    for row in rows:
        report = json.loads((Path(row["report_dir"]) / "report.json").read_text())
        assert row["run_id"] == report["run_id"] and row["status"] == "passed" and row["exit_code"] == 0
        assert row["environment"] == "lab" and row["duration_s"] == report["duration_s"]
        assert {s: o["rto_s"] for s, o in row["objectives"].items()} == \
            {o["service"]: o["rto_measured_s"] for o in report["objectives"]}
    assert rows[1]["kind"] == "ci-smoke"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (drill report allure needs it)")
def test_report_allure_builds_one_single_file_report_and_carries_history(runs, drill_lab):
    out = runs / "allure-html"
    r = drill("report", "allure", "--output", str(out), state=drill_lab.state, reports=runs, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    index = out / "index.html"
    assert index.is_file() and "2 result dir(s)" in r.stdout
    html = index.read_text()
    # everything inline (it opens from a file path) and nothing fetched from elsewhere (no analytics either)
    assert "<script" in html and not re.search(r'(src|href)="(https?:)?//', html)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stats"]["total"] == 2 and summary["stats"]["passed"] == 2
    history = runs / "allure-history.jsonl"
    assert len(history.read_text().splitlines()) == 1
    r = drill("report", "allure", "--output", str(out), state=drill_lab.state, reports=runs, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(history.read_text().splitlines()) == 2  # the second build carries the first one's history
