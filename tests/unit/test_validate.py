"""`drill validate`: experiments, features and plan files, good and broken, each reported on one line; exit 0 / 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.config import DEFAULT_PLAN
from harness.drill import validate as V

ROOT = Path(__file__).resolve().parents[2]
STEPS = ROOT / "steps"


def experiment(*activities: dict) -> dict:
    return {"version": "1.0.0", "title": "t", "description": "d",
            "steady-state-hypothesis": {"title": "healthy", "probes": [
                {"type": "probe", "name": "healthy", "tolerance": True,
                 "provider": {"type": "python", "module": "harness.targets.app.probes",
                              "func": "all_services_healthy"}}]},
            "method": list(activities) or [
                {"type": "action", "name": "fail-over",
                 "provider": {"type": "python", "module": "harness.failover.runbook", "func": "fail_over",
                              "arguments": {"to_region": "dr"}}}],
            "rollbacks": [{"type": "action", "name": "fail-back",
                           "provider": {"type": "python", "module": "harness.failover.failback",
                                        "func": "fail_back"}}]}


def action(module: str, func: str, name: str = "act") -> dict:
    return {"type": "action", "name": name, "provider": {"type": "python", "module": module, "func": func}}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str):
    return CliRunner().invoke(app, ["validate", *args])


GOOD_FEATURE = """Feature: backup drill
  Background:
    Given the embedded lab is up

  Scenario Outline: the gate is approved
    Given a recent backup of the primary database exists
    When the gate "<gate>" is approved
    Then the data integrity checks pass

    Examples:
      | gate                     |
      | data_restore_from_backup |
"""


# -- experiments ------------------------------------------------------------------------------------
def test_the_repository_inputs_are_valid():
    results = V.validate_paths([ROOT / "experiments" / "region-failover.json",
                                ROOT / "features" / "region_failover.feature", DEFAULT_PLAN])
    assert [r.ok for r in results] == [True, True, True], [r.line() for r in results]
    assert results[0].line().endswith("(experiment: 13 activities)")
    assert results[0].line().startswith("ok  ")


def test_good_experiment_counts_its_activities(tmp_path):
    p = write(tmp_path / "good.json", json.dumps(experiment()))
    r = V.validate_path(p)
    assert r.ok, r.line()
    assert r.line() == f"ok  {p} (experiment: 3 activities)"


def test_good_yaml_experiment(tmp_path):
    p = write(tmp_path / "good.yaml", yaml.safe_dump(experiment()))
    r = V.validate_path(p)
    assert (r.kind, r.ok) == ("experiment", True), r.line()


def test_missing_function_is_reported(tmp_path):
    p = write(tmp_path / "missing.json", json.dumps(experiment(action("harness.drill.actions", "no_such_action"))))
    r = V.validate_path(p)
    assert not r.ok
    assert r.line().startswith(f"invalid {p}: ")
    assert "method[0] 'act': module 'harness.drill.actions' has no function 'no_such_action'" in r.line()


def test_unimportable_module_and_private_harness_function_are_reported(tmp_path):
    p = write(tmp_path / "bad-providers.json", json.dumps(experiment(
        action("harness.no_such_module", "f", "a"), action("harness.safety.guard", "_truthy", "b"))))
    r = V.validate_path(p)
    line = r.line()
    assert "module 'harness.no_such_module' cannot be imported" in line
    assert "harness.safety.guard._truthy is not in harness.safety.guard.__all__" in line
    assert "\n" not in line


def test_bad_json_is_reported_with_its_position(tmp_path):
    p = write(tmp_path / "bad.json", '{"title": "t",\n  "method": [,]}\n')
    r = V.validate_path(p)
    assert not r.ok
    assert "not valid JSON" in r.line() and "line 2" in r.line()


def test_chaoslib_schema_errors_are_reported(tmp_path):
    doc = experiment()
    del doc["title"]
    p = write(tmp_path / "untitled.json", json.dumps(doc))
    r = V.validate_path(p)
    assert not r.ok and "title" in r.line().lower()


# -- features ---------------------------------------------------------------------------------------
def test_good_feature_with_outline_matches_the_steps(tmp_path):
    p = write(tmp_path / "good.feature", GOOD_FEATURE)
    r = V.validate_path(p, steps_dir=STEPS)
    assert r.ok, r.line()
    assert r.line() == f"ok  {p} (feature: 1 scenario, 4 steps)"


def test_gherkin_syntax_error_names_its_line(tmp_path):
    p = write(tmp_path / "broken.feature",
              "Feature: x\n  Scenario: y\n    Given the embedded lab is up\n  this is not gherkin\n")
    r = V.validate_path(p, steps_dir=STEPS)
    assert not r.ok
    assert "Gherkin syntax error at line 4, column 3" in r.line(), r.line()


def test_unknown_step_and_wrong_step_type_are_reported(tmp_path):
    p = write(tmp_path / "unknown.feature", "Feature: x\n  Scenario: y\n    Given the embedded lab is up\n"
                                            "    And the moon is made of cheese\n"
                                            "    Then the primary region fails\n")
    r = V.validate_path(p, steps_dir=STEPS)
    assert not r.ok
    assert "line 4: no step definition matches And 'the moon is made of cheese'" in r.line()
    # "the primary region fails" is a When step: as a Then it does not match
    assert "line 5: no step definition matches Then 'the primary region fails'" in r.line()


def test_step_definitions_come_from_pytest_bdd_registry():
    defs = V.load_step_definitions(STEPS)
    patterns = {(d.type, d.pattern) for d in defs}
    assert ("given", "the embedded lab is up") in patterns
    assert ("when", 'the gate "{gate}" is approved') in patterns


def test_feature_without_steps_package_nearby_is_checked_against_the_shipped_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no steps/ above the feature nor in the cwd: the steps `drill run` binds
    p = write(tmp_path / "lonely.feature", "Feature: x\n  Scenario: y\n    Given anything at all\n")
    r = V.validate_path(p)
    assert not r.ok and r.problems == ("line 3: no step definition matches Given 'anything at all'",)
    mine = tmp_path / "mine.feature"
    shutil.copy(ROOT / "features" / "region_failover.feature", mine)
    r = V.validate_path(mine)
    assert r.ok and "steps not checked" not in r.line(), r.line()


# -- plan files -------------------------------------------------------------------------------------
def test_bad_duration_in_a_full_plan(tmp_path):
    plan = yaml.safe_load(DEFAULT_PLAN.read_text())
    service = next(iter(plan["services"]))
    plan["services"][service]["rto"] = "ten minutes"
    p = write(tmp_path / "plan.yaml", yaml.safe_dump(plan))
    r = V.validate_path(p)
    assert (r.kind, r.ok) == ("plan", False)
    assert f"services.{service}.rto" in r.line() and "ten minutes" in r.line()


def test_plan_overrides_good_and_bad(tmp_path):
    good = write(tmp_path / "tight.yaml", "services:\n  authentication:\n    rto: 5m\n")
    bad = write(tmp_path / "loose.yaml", "services:\n  authentication:\n    rpo: 3 fortnights\n")
    unknown = write(tmp_path / "new.yaml", "services:\n  billing:\n    rto: 5m\n")
    rg, rb, ru = V.validate_paths([good, bad, unknown])
    assert (rg.kind, rg.ok) == ("plan-overrides", True), rg.line()
    assert "services.authentication.rpo" in rb.line() and "3 fortnights" in rb.line()
    assert "unknown service 'billing'" in ru.line()


def test_invalid_yaml_is_reported_with_its_line(tmp_path):
    p = write(tmp_path / "broken.yaml", "services:\n  authentication: [\n")
    r = V.validate_path(p)
    assert not r.ok and "line" in r.line()


# -- the command ------------------------------------------------------------------------------------
def test_cli_all_valid_exits_0(tmp_path):
    exp = write(tmp_path / "good.json", json.dumps(experiment()))
    feat = write(tmp_path / "good.feature", GOOD_FEATURE)
    res = run_cli(str(exp), str(feat), str(DEFAULT_PLAN), "--steps-dir", str(STEPS))
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 3 and all(ln.startswith("ok  ") for ln in lines), res.output


def test_cli_reports_each_broken_file_and_exits_2(tmp_path):
    good = write(tmp_path / "good.json", json.dumps(experiment()))
    missing_func = write(tmp_path / "missing.json", json.dumps(experiment(action("harness.drill.actions", "nope"))))
    bad_json = write(tmp_path / "bad.json", "{nope")
    broken = write(tmp_path / "broken.feature", "Feature: x\n  Scenario: y\n    Given a\n  oops\n")
    plan = write(tmp_path / "overrides.yaml", "goals:\n  rto: soon\n")
    absent = tmp_path / "absent.yaml"
    res = run_cli(*(str(p) for p in (good, missing_func, bad_json, broken, plan, absent)),
                  "--steps-dir", str(STEPS))
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 6, res.output
    assert lines[0].startswith(f"ok  {good}")
    assert lines[1].startswith(f"invalid {missing_func}: ") and "'nope'" in lines[1]
    assert lines[2].startswith(f"invalid {bad_json}: not valid JSON")
    assert lines[3].startswith(f"invalid {broken}: Gherkin syntax error at line 4")
    assert lines[4].startswith(f"invalid {plan}: ") and "goals.rto" in lines[4] and "soon" in lines[4]
    assert lines[5] == f"invalid {absent}: no such file"


def test_cli_json(tmp_path):
    bad = write(tmp_path / "bad.json", "[")
    res = run_cli("--json", str(bad))
    assert res.exit_code == 2
    data = json.loads(res.output)
    assert data["ok"] is False and data["files"][0]["kind"] == "experiment"


@pytest.mark.parametrize("args", [["--help"], []])
def test_cli_help_and_usage(args):
    res = run_cli(*args)
    if args:
        assert res.exit_code == 0 and "Exit code" in res.output
    else:
        assert res.exit_code == 2
