"""`drill run features/region_failover.feature` leaves Allure results with its Gherkin steps and a row in the run
history; `drill history --json` lists it; `drill report allure` builds one single-file HTML report. (ci-smoke's
Allure result: tests/integration/_allure.py, called by test_drill_run.py on its ci-smoke run.)"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration._allure import attachment_names, results
from tests.cli import drill_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def drill(*args: str, state: Path, reports: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return drill_cli(*args, state=state, timeout=timeout, drop=("DRILL_HISTORY",),
                     env={"DRILL_REPORTS_DIR": str(reports)})


@pytest.fixture(scope="module")
def runs(drill_lab, tmp_path_factory):
    """One feature run into a reports root of its own (its dir run id named, as by default). The Allure result of a
    ci-smoke run is checked by tests/integration/test_drill_run.py on the run it makes anyway
    (tests/integration/_allure.py)."""
    reports = tmp_path_factory.mktemp("reports")
    r = drill("run", str(ROOT / "features" / "region_failover.feature"), state=drill_lab.state, reports=reports)
    assert r.returncode == 0, r.stderr[-3000:]
    return reports


def test_feature_run_leaves_a_scenario_result_with_gherkin_steps_tags_and_attachments(runs):
    [rdir] = [d for d in runs.iterdir() if (d / "report.json").is_file()]
    [res] = results(rdir)
    assert res["status"] == "passed"
    assert res["name"] == "The primary region is lost under load and K-ERP recovers in the DR region"
    steps = [s["name"] for s in res["steps"]]
    assert steps[0] == "Given the embedded lab is up"
    assert "When the primary region fails" in steps
    assert "And every service meets its RTO and RPO objectives" in steps
    assert len(steps) == 17 and all(s["status"] == "passed" for s in res["steps"])
    tags = {label["value"] for label in res["labels"] if label["name"] == "tag"}
    assert {"dr_drill", "disaster_level_3"} <= tags
    assert {"report.json", "timeline chart", "integrity details"} <= attachment_names(res)


def test_history_lists_the_run_with_rto_rpo(runs, drill_lab):
    r = drill("history", "--json", state=drill_lab.state, reports=runs)
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)
    report = json.loads((Path(row["report_dir"]) / "report.json").read_text())
    assert row["run_id"] == report["run_id"] and row["kind"] == "region-failover" and row["target"].endswith(".feature")
    # the feature's @level3 tag: its downtime is judged as an experiment's drill_level is (144 s on the 0.01 clock)
    lvl = report["level_objective"]
    assert (lvl["level"], lvl["objective_s"], lvl["measured"], lvl["met"]) == (3, 144.0, True, True), lvl
    assert 0 < lvl["measured_downtime_s"] < 144, lvl
    assert row["status"] == "passed" and row["exit_code"] == 0 and row["environment"] == "lab"
    assert row["duration_s"] == report["duration_s"] and row["started_at"] == report["started_at"]
    assert {s: (o["rto_s"], o["rpo_s"]) for s, o in row["objectives"].items()} == \
        {o["service"]: (o["rto_measured_s"], o["rpo_measured_s"]) for o in report["objectives"]}


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (drill report allure needs it)")
def test_report_allure_builds_one_single_file_report_and_carries_history(runs, drill_lab):
    out = runs / "allure-html"
    r = drill("report", "allure", "--output", str(out), state=drill_lab.state, reports=runs, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    index = out / "index.html"
    assert index.is_file() and "1 result dir(s)" in r.stdout
    html = index.read_text()
    # everything inline (it opens from a file path) and nothing fetched from elsewhere (no analytics either)
    assert "<script" in html and not re.search(r'(src|href)="(https?:)?//', html)
    # the scenario's data is inside the one file (base64 per test case): its Gherkin steps and attachments
    embedded = re.findall(r'"(data/test-cases/[^"]+)"\s*,\s*"([^"]+)"', html)
    [case] = [json.loads(base64.b64decode(v)) for _, v in embedded]
    assert [st["name"] for st in case["testStage"]["steps"]][:2] == ["Given the embedded lab is up",
                                                                      'And a drill of kind "region-failover" is recording']
    assert {"report.json", "timeline chart"} <= {a["name"] for a in case["testStage"]["attachments"]}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stats"]["total"] == 1 and summary["stats"]["passed"] == 1
    history = runs / "allure-history.jsonl"
    assert len(history.read_text().splitlines()) == 1
    r = drill("report", "allure", "--output", str(out), state=drill_lab.state, reports=runs, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(history.read_text().splitlines()) == 2  # the second build carries the first one's history
