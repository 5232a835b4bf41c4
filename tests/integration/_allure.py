"""Checks of a run's Allure results shared by the integration tests (the ci-smoke run of test_drill_run.py, the feature run of test_allure_history.py)."""

from __future__ import annotations

import json
from pathlib import Path


def results(report_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (report_dir / "allure-results").glob("*-result.json")]


def attachment_names(result: dict) -> set[str]:
    return {a["name"] for a in result.get("attachments", [])}


def assert_experiment_allure_result(rdir: Path) -> None:
    """A Chaos Toolkit run's report dir holds one Allure result: a step per phase, a sub-step per activity of its
    journal, the experiment's tags as labels, report.json / timeline chart / integrity details attached."""
    [res] = results(rdir)
    journal = json.loads((rdir / "journal.json").read_text())
    assert res["status"] == "passed" and res["name"] == journal["experiment"]["title"]
    phases = [s["name"] for s in res["steps"]]
    assert phases[0].startswith("steady state hypothesis (before") and "method" in phases and "rollbacks" in phases
    method = next(s for s in res["steps"] if s["name"] == "method")
    assert [s["name"].split(": ", 1)[1] for s in method["steps"]] == [r["activity"]["name"] for r in journal["run"]]
    assert all(s["status"] == "passed" for s in method["steps"])
    tags = {label["value"] for label in res["labels"] if label["name"] == "tag"}
    assert tags == set(journal["experiment"]["tags"])
    assert {"report.json", "timeline chart", "integrity details"} <= attachment_names(res)
    by_name = {a["name"]: a for a in res["attachments"]}
    attached = json.loads((rdir / "allure-results" / by_name["report.json"]["source"]).read_text())
    assert attached["run_id"] == json.loads((rdir / "report.json").read_text())["run_id"]
    assert (rdir / "allure-results" / by_name["timeline chart"]["source"]).read_text().startswith("<svg")
