"""The disaster catalog: tag rules, the scan of experiment and feature folders, which scenarios each profile draws,
the level's downtime as an objective, the profile summary's worst exit code, and docs/CATALOG.md kept in sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.core import catalog as core
from harness.core.report import decide_exit
from harness.drill import catalog, profiles, runner
from harness.drill import validate as V
from harness.errors import UsageError
from harness.report import profile as profile_report

ROOT = Path(__file__).resolve().parents[2]


# -- tag rules ----------------------------------------------------------------------------------------
def test_a_scenario_has_one_level_and_its_cadences():
    t = core.read_tags(["k-erp", "level3", "ci", "annual"])
    assert (t.level, t.cadences, t.kind, t.problems) == (3, ("ci", "annual"), "scenario", ())
    assert core.read_tags(["@dr_drill", "@level1", "@monthly"]).level == 1  # a feature's tags


@pytest.mark.parametrize("tags,why", [
    (["k-erp", "monthly"], "no level tag"),
    (["level1", "level2", "monthly"], "2 level tags (level1, level2)"),
    (["level-1", "monthly"], "unknown level tag 'level-1'"),
    (["level5", "level1"], "unknown level tag 'level5'"),
    (["level1", "annual"], "cadence 'annual' draws level(s) 3, 4 only, this scenario is level1"),
    (["composite", "level2"], "a composite file is not a catalog scenario"),
    (["tabletop", "monthly"], "a tabletop file is not a catalog scenario"),
])
def test_broken_tag_rules_are_named(tags, why):
    assert any(why in p for p in core.read_tags(tags).problems), core.read_tags(tags).problems


def test_non_scenarios_and_the_configured_level():
    assert core.read_tags(["composite", "k-erp"]).kind == "composite" and not core.read_tags(["composite"]).problems
    t = core.read_tags(["level2", "monthly"])
    assert core.configuration_problems(t, {"drill_level": 2}) == []
    assert "differs from the level tag level2" in core.configuration_problems(t, {"drill_level": 3})[0]
    assert "must be a level 1..4" in core.configuration_problems(t, {"drill_level": "two"})[0]


# -- scan and drawing (temporary folders of fake files) ---------------------------------------------
def _experiment(tags, *, level=None, scale=None, fault=True, env=None):
    cfg = {}
    if level is not None:
        cfg["drill_level"] = level
    if scale is not None:
        cfg["drill_time_scale"] = scale
    if env:
        cfg["drill_lab_environment"] = env
    method = [{"type": "action", "name": "start-workload",
               "provider": {"type": "python", "module": "harness.drill.actions", "func": "start_workload"}}]
    if fault:
        method.append({"type": "action", "name": "cut-the-link",
                       "provider": {"type": "python", "module": "harness.targets.toxiproxy.actions",
                                    "func": "cut_link", "arguments": {"proxy": "popbill"}}})
    method.append({"type": "action", "name": "link-back",
                   "provider": {"type": "python", "module": "harness.targets.toxiproxy.actions",
                                "func": "restore_link", "arguments": {"proxy": "popbill"}}})
    return {"version": "1.0.0", "title": f"title of {'/'.join(tags)}", "description": "what happens", "tags": tags,
            "configuration": cfg, "method": method,
            "steady-state-hypothesis": {"title": "every service answers", "probes": []}}


def _folders(tmp_path, experiments: dict, features: dict):
    e, f = tmp_path / "experiments", tmp_path / "features"
    e.mkdir()
    f.mkdir()
    for name, doc in experiments.items():
        (e / name).write_text(json.dumps(doc))
    for name, tags in features.items():
        (f / name).write_text(f"{' '.join(tags)}\nFeature: drill {name}\n\n  Scenario: it recovers\n"
                              "    Given the embedded lab is up\n")
    return e, f


@pytest.fixture()
def fake(tmp_path):
    return _folders(tmp_path, {
        "pod-loss.json": _experiment(["level1", "monthly"], level=1, scale=0.01, env="lab-cloud"),
        "popbill-outage.json": _experiment(["level2", "monthly"]),
        "region-loss.json": _experiment(["level3", "ci", "semiannual", "annual"], level=3),
        "long-outage.json": _experiment(["level4", "annual"]),
        "data-corruption.json": _experiment(["level3", "semiannual"]),
        "policy.json": _experiment(["composite"]),
        "no-level.json": _experiment(["monthly"]),
        "two-levels.json": _experiment(["level1", "level2"]),
    }, {"pod_loss.feature": ["@dr_drill", "@level1", "@monthly"],
        "region_loss.feature": ["@dr_drill", "@level3", "@ci", "@semiannual", "@annual"],
        "feature_only.feature": ["@level2", "@monthly"]})


def test_scan_pairs_experiment_and_feature_and_reads_each_scenario(fake):
    cat = catalog.scan(*fake)
    ids = [s.id for s in cat.scenarios]
    assert ids == ["pod-loss", "feature-only", "popbill-outage", "data-corruption", "region-loss", "long-outage"]
    pod = cat.get("pod-loss")
    assert pod.experiment.name == "pod-loss.json" and pod.feature.name == "pod_loss.feature"
    assert (pod.level, pod.cadences, pod.environment, pod.time_scale) == (1, ("monthly",), "lab-cloud", 0.01)
    assert pod.faults == ("cut-the-link",)  # the guarded fault, not the workload nor the revert
    assert pod.expected.startswith("automatic recovery (Kubernetes self-healing): it recovers")
    assert pod.objective["downtime_objective_s"] == 3.0 and pod.objective["expected_downtime_s"] == 300
    assert pod.objective["services"]["authentication"] == {"rto_s": 3600.0, "rpo_s": 900.0}
    assert cat.get("feature-only").experiment is None and cat.get("feature-only").faults == ()
    assert [d.path.name for d in cat.others] == ["policy.json"]
    problems = "\n".join(cat.problems)
    assert "no-level.json: no level tag" in problems and "two-levels.json: 2 level tags" in problems
    assert cat.get("no-level") is None and cat.get("two-levels") is None


def test_a_feature_whose_tags_differ_from_its_experiment_is_not_drawn(tmp_path):
    e, f = _folders(tmp_path, {"x.json": _experiment(["level3", "annual"])}, {"x.feature": ["@level4", "@annual"]})
    cat = catalog.scan(e, f)
    assert cat.get("x") is None and "differ from its experiment's level3" in cat.problems[0]


@pytest.mark.parametrize("profile,drawn", [
    ("ci-smoke", ["region-loss"]),
    ("monthly-chaos", ["pod-loss", "feature-only", "popbill-outage"]),
    ("semiannual-simulation", ["data-corruption", "region-loss"]),
    ("annual-full-dr", ["region-loss", "long-outage"]),
])
def test_each_profile_draws_its_cadence_at_its_levels(fake, profile, drawn):
    cat = catalog.scan(*fake)
    assert [s.id for s in runner.pick_scenarios(profiles.get(profile), cat)] == drawn


def test_scenario_option_picks_and_refuses(fake):
    cat = catalog.scan(*fake)
    monthly = profiles.get("monthly-chaos")
    assert [s.id for s in runner.pick_scenarios(monthly, cat, ("popbill-outage", "pod-loss"))] == [
        "pod-loss", "popbill-outage"]  # catalog order, whatever the order given
    with pytest.raises(UsageError, match="'region-loss' .* is not drawn by monthly-chaos"):
        runner.pick_scenarios(monthly, cat, ("region-loss",))
    with pytest.raises(UsageError, match="'nope' is not in the catalog"):
        runner.pick_scenarios(monthly, cat, ("nope",))
    empty = catalog.Catalog((), (), ())
    with pytest.raises(UsageError, match="draws no scenario"):
        runner.pick_scenarios(monthly, empty)


def test_the_shipped_catalog_is_valid_and_region_failover_is_the_fast_level_3():
    cat = catalog.scan()
    assert cat.problems == ()
    rf = cat.get("region-failover")
    assert rf.level == 3 and rf.cadences == ("ci", "semiannual", "annual") and rf.feature is not None
    assert [s.id for s in core.draw(cat.scenarios, levels=(3,), cadence="ci")] == ["region-failover"]
    assert {d.path.name for d in cat.others} >= {"tabletop.json", "monthly-chaos.json", "semiannual-simulation.json"}
    for sid in ("k8s-pod-kill", "k8s-node-drain", "k8s-no-schedulable-node"):
        assert cat.get(sid).level == 1 and cat.get(sid).environment == "lab-cloud"


# -- drill validate reports the rules -----------------------------------------------------------------
def test_validate_reports_a_tag_error_on_one_line_exit_2(tmp_path):
    e, _ = _folders(tmp_path, {"two.json": _experiment(["level1", "level3"])}, {})
    r = CliRunner().invoke(app, ["validate", str(e / "two.json")])
    assert r.exit_code == 2
    line, = r.output.strip().splitlines()
    assert line.startswith(f"invalid {e / 'two.json'}: catalog: 2 level tags (level1, level3)")
    free = tmp_path / "mine.json"  # outside an experiments/ folder and without catalog tags: a free-form drill
    free.write_text(json.dumps(_experiment(["k-erp"])))
    assert V.validate_path(free).ok


def test_validate_reports_a_feature_without_level(tmp_path):
    _, f = _folders(tmp_path, {}, {"x.feature": ["@dr_drill", "@monthly"], "mine.feature": ["@dr_drill"]})
    r = V.validate_path(f / "x.feature", steps_dir=ROOT / "steps")  # a cadence but no level
    assert not r.ok and "catalog: no level tag" in r.line()
    # a user's own drill in a features/ folder of theirs, without catalog tags: free-form, not judged
    assert "catalog" not in V.validate_path(f / "mine.feature", steps_dir=ROOT / "steps").line()


# -- the level's downtime as an objective ------------------------------------------------------------
def test_level_objective_is_the_worst_rto_against_the_scaled_downtime():
    o = core.level_objective(3, "major", 14400, 0.01, {"authentication": (12.5, 40), "voucher-service": (30.25, 40),
                                                       "api-gateway": (0.0, 40), "tax-invoice-service": (None, 0)})
    assert (o.objective_s, o.measured_downtime_s, o.worst_service, o.met, o.measured) == (
        144.0, 30.25, "voucher-service", True, True)
    assert "tax-invoice-service" not in o.to_dict()["downtime_by_service"]  # not probed: not judged
    missed = core.level_objective(1, "minor", 300, 0.01, {"authentication": (3.5, 10)})
    assert missed.objective_s == 3.0 and missed.met is False and missed.measured_downtime_s == 3.5
    never = core.level_objective(1, "minor", 300, 0.01, {"authentication": (None, 10), "api-gateway": (1.0, 10)})
    assert never.met is False and never.measured_downtime_s is None and "authentication" in never.note
    nothing = core.level_objective(2, "moderate", 1800, 0.01, {"authentication": (None, 0)})
    assert nothing.measured is False and nothing.met is False
    with pytest.raises(ValueError):
        core.level_objective(2, "moderate", 1800, 0, {})


def test_a_missed_level_objective_is_exit_3_unless_a_dry_run():
    met = {"met": True}
    assert decide_exit([met], [], level_objective={"met": False}) == ("failed", 3)
    assert decide_exit([met], [], level_objective={"met": True}) == ("passed", 0)
    assert decide_exit([met], [], level_objective=None) == ("passed", 0)
    assert decide_exit([met], [], dry_run=True, level_objective={"met": False}) == ("passed", 0)
    assert decide_exit([met], [{"status": "fail"}], level_objective={"met": False})[1] == 4


# -- the profile summary -------------------------------------------------------------------------------
def test_the_profile_exit_code_is_the_worst_by_severity():
    assert profile_report.worst_exit([0, 3, 5]) == 3
    assert profile_report.worst_exit([3, 4, 1]) == 4
    assert profile_report.worst_exit([0, 130, 4]) == 130
    assert profile_report.worst_exit([0, 0]) == 0 and profile_report.worst_exit([]) == 0
    assert profile_report.worst_exit([0, 77]) == 1  # unknown: a harness error


def test_profile_summary_rows_and_files(tmp_path):
    report = {"run_id": "r1", "status": "failed", "exit_code": 3, "duration_s": 12.0,
              "level_objective": {"measured_downtime_s": 4.0, "objective_s": 3.0, "met": False},
              "objectives": [{"service": "authentication", "rto_measured_s": 4.0, "rpo_measured_s": 0.5, "met": True},
                             {"service": "api-gateway", "rto_measured_s": 1.0, "rpo_measured_s": None, "met": True}]}
    info = {"id": "pod-loss", "level": 1, "title": "t"}
    rows = [profile_report.scenario_row(info, report, 3, tmp_path / "01-pod-loss"),
            profile_report.scenario_row({"id": "b", "level": 2}, None, 5, None, "refused: not approved")]
    assert rows[0]["downtime_s"] == 4.0 and rows[0]["level_met"] is False and rows[0]["rto_worst_service"] == \
        "authentication" and rows[0]["rpo_worst_s"] == 0.5
    s = profile_report.build(run_id="p", profile="monthly-chaos", title="Monthly", started_at=0, ended_at=30,
                             rows=rows, drawn=["pod-loss", "b", "c"], stopped=None)
    assert (s["exit_code"], s["status"], s["not_run"]) == (3, "failed", ["c"])
    paths = profile_report.write(s, tmp_path)
    assert json.loads(paths["json"].read_text())["scenarios"][0]["scenario"] == "pod-loss"
    assert "4s / 3s MISSED" in paths["md"].read_text() and "refused: not approved" in paths["md"].read_text()
    assert "01-pod-loss/report.html" in paths["html"].read_text()
    stopped = profile_report.build(run_id="p", profile="x", title="x", started_at=0, ended_at=1,
                                   rows=[dict(rows[0], exit_code=0)], drawn=["pod-loss"], stopped="lab unhealthy")
    assert stopped["exit_code"] == 1  # stopped by the lab's state although nothing failed: not a pass


# -- the catalog page ----------------------------------------------------------------------------------
def test_docs_catalog_page_is_in_sync_with_the_files():
    page = (ROOT / "docs" / "CATALOG.md").read_text(encoding="utf-8")
    assert page == catalog.render_markdown(catalog.scan()), (
        "docs/CATALOG.md is out of date: regenerate it with `drill catalog --markdown > docs/CATALOG.md`")


def test_catalog_command_json_and_table():
    r = CliRunner().invoke(app, ["catalog", "--json", "--profile", "ci-smoke"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [s["id"] for s in doc["scenarios"]] == ["region-failover"]
    assert doc["scenarios"][0]["objective"]["downtime_objective_s"] == 144.0
    assert doc["scenarios"][0]["faults"] == ["fail-primary-region"]
    r = CliRunner().invoke(app, ["catalog"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "region-failover" in r.output  # the id column is never cut (faults may wrap)
    r = CliRunner().invoke(app, ["catalog", "--profile", "nope"])
    assert r.exit_code == 2


def test_a_profile_interrupted_between_scenarios_exits_130():
    row = {"scenario": "a", "level": 1, "exit_code": 0}
    s = profile_report.build(run_id="p", profile="x", title="x", started_at=0, ended_at=1, rows=[row],
                             drawn=["a", "b"], stopped="interrupted between scenarios", interrupted=True)
    assert (s["exit_code"], s["status"], s["not_run"]) == (130, "aborted", ["b"])
