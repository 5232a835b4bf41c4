"""Unit tests of the fault guard: context from configuration and session, refusals, dry run, ledger-first, revert references."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Iterator

import pytest

from harness.config import load_plan
from harness.core.safety import PlannedFault, decide
from harness.drill import session as drill_session
from harness.errors import SafetyRefusal, UsageError
from harness.safety import context as run_context
from harness.safety import guard
from harness.safety.fault_ledger import FaultLedger

PLAN = load_plan()


def revert_me(configuration: dict | None = None) -> None:
    """A module-level revert function for the ledger tests."""


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.delenv("DRILL_FAULT_LEDGER", raising=False)
    monkeypatch.setenv("DRILL_STATE_DIR", str(tmp_path / "lab"))
    return {"drill_state_dir": str(tmp_path / "lab")}


@pytest.fixture
def session(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[drill_session.DrillSession]:
    """A running session, named in the test's `state` (its configuration) by its run id as `drill run` does."""
    s = drill_session.begin("test", "guard", report_dir=tmp_path / "report")
    if "state" in request.fixturenames:
        request.getfixturevalue("state")[run_context.RUN_ID_KEY] = s.run_id
    try:
        yield s
    finally:
        drill_session.end()


def test_context_defaults_to_the_lab_with_nothing_approved() -> None:
    ctx = guard.context_for(None, (), PLAN, now=1.0)
    assert ctx.environment == "lab" and ctx.approved_gates == frozenset() and not ctx.dry_run
    assert "dr_region_switch" in ctx.known_gates


def test_context_merges_configuration_and_session_approvals() -> None:
    ctx = guard.context_for({"drill_approvals": ["data_restore_from_backup"], "drill_dry_run": "true",
                             "drill_allowed_environments": "staging, prod", "drill_max_regions": "1"},
                            {"dr_region_switch"}, PLAN, now=1.0)
    assert ctx.approved_gates == {"data_restore_from_backup", "dr_region_switch"}
    assert ctx.dry_run and ctx.allowed_environments == {"staging", "prod"} and ctx.max_regions == 1


@pytest.mark.parametrize("key, value", [("drill_max_regions", "two"), ("drill_max_components", -1),
                                        ("drill_approvals", 5)])
def test_context_rejects_bad_values_naming_them(key: str, value: object) -> None:
    with pytest.raises(UsageError, match=key):
        guard.context_for({key: value}, (), PLAN, now=1.0)


def test_plan_gates_attach_to_switch_region() -> None:
    fault = PlannedFault.for_plan(PLAN, "switch_region", "switch_region", "router:dr")
    refused = decide(fault, guard.context_for(None, (), PLAN, now=1.0))
    assert refused.refused and refused.reason.startswith("not injecting: ") and "--approve dr_region_switch" in refused.reason
    assert decide(fault, guard.context_for(None, {"dr_region_switch"}, PLAN, now=1.0)).allowed


def test_func_ref_names_importable_functions_only() -> None:
    assert guard.func_ref(revert_me) == f"{__name__}:revert_me"
    assert guard.func_ref("harness.failover.failback:fail_back") == "harness.failover.failback:fail_back"
    with pytest.raises(UsageError, match="lambda"):
        guard.func_ref(lambda: None)
    with pytest.raises(UsageError, match="no_colon"):
        guard.func_ref("no_colon")


def test_refusal_writes_nothing_and_says_why(state: dict, session: drill_session.DrillSession) -> None:
    with pytest.raises(SafetyRefusal, match=r"^not injecting: 'switch_region' needs approval for dr_region_switch"):
        guard.inject("switch_region", "router:dr", revert=(revert_me, {}), configuration=state)
    assert FaultLedger().active() == []
    assert [(e.kind, e.data["phase"]) for e in session.timeline.events if e.kind == "fault"] == [("fault", "refused")]
    assert session.fault_t is None


def test_environment_must_be_allowed(state: dict) -> None:
    with pytest.raises(SafetyRefusal, match="not injecting: .*'prod' is not on the allow-list"):
        guard.inject("kill_primary", "postgres:primary", revert=(revert_me, {}),
                     configuration={**state, "drill_environment": "prod"})
    inj = guard.inject("kill_primary", "postgres:primary", revert=(revert_me, {}),
                       configuration={**state, "drill_environment": "prod", "drill_allowed_environments": ["prod"]})
    assert inj.proceed


def test_blast_radius_limits_regions(state: dict) -> None:
    with pytest.raises(SafetyRefusal, match="touches 2 regions"):
        guard.inject("cut_replication", "toxiproxy:pg_replication", revert=(revert_me, {}),
                     regions=("primary", "dr"), configuration={**state, "drill_max_regions": 1})


def test_dry_run_records_the_planned_fault_only(state: dict, session: drill_session.DrillSession) -> None:
    inj = guard.inject("kill_primary", "postgres:primary", revert=(revert_me, {}),
                       configuration={**state, "drill_dry_run": True})
    assert not inj.proceed and inj.dry_run and inj.entry is None and inj.to_dict()["dry_run"]
    assert FaultLedger().active() == []
    planned = [e for e in session.timeline.events if e.kind == "fault"]
    assert [e.data["phase"] for e in planned] == ["planned"] and session.fault_t is None


def test_session_dry_run_counts_too(state: dict, session: drill_session.DrillSession) -> None:
    session.config["drill_dry_run"] = True
    assert not guard.inject("kill_primary", "postgres:primary", revert=(revert_me, {}), configuration=state).proceed


def test_inject_writes_the_ledger_first_then_the_event(state: dict, session: drill_session.DrillSession) -> None:
    session.approvals.add("dr_region_switch")
    inj = guard.inject("switch_region", "router:dr", revert=(revert_me, {"x": 1}), regions=("dr",),
                       configuration=state)
    assert inj.proceed and inj.entry is not None
    line = json.loads((Path(state["drill_state_dir"]) / "fault-ledger.jsonl").read_text().splitlines()[0])
    assert line["op"] == "inject" and line["revert_func"] == f"{__name__}:revert_me"
    assert line["revert_kwargs"] == {"x": 1, "configuration": {"drill_state_dir": str(Path(state["drill_state_dir"]).resolve()),
                                                               "drill_run_id": session.run_id}}
    assert line["run_id"] == session.run_id
    ev = [e for e in session.timeline.events if e.kind == "fault"][-1]
    assert ev.data["phase"] == "inject" and ev.data["fault_id"] == inj.entry.id
    assert session.fault_t == ev.t


def test_mark_reverted_and_revert_all(state: dict, session: drill_session.DrillSession) -> None:
    a = guard.inject("kill_primary", "postgres:primary", revert=(revert_me, {}), configuration=state).entry
    b = guard.inject("kill_primary", "redis:primary", revert=(revert_me, {}), configuration=state).entry
    assert guard.mark_reverted(("kill_primary", "stop_primary"), "postgres:primary", state) == [a.id]
    assert guard.mark_reverted("kill_primary", "postgres:primary", state) == []  # idempotent
    assert [e.id for e in FaultLedger().active()] == [b.id]
    assert FaultLedger().revert_all() == [(b, None)]
    assert FaultLedger().active() == []
    phases = [e.data["phase"] for e in session.timeline.events if e.kind == "fault"]
    assert phases == ["inject", "inject", "revert"]


def test_approve_refuses_without_the_gate(state: dict) -> None:
    with pytest.raises(SafetyRefusal, match="^not injecting: 'fail_over' needs approval for dr_region_switch"):
        guard.approve("dr_region_switch", "fail_over", state)
    assert guard.approve("dr_region_switch", "fail_over", {**state, "drill_approvals": ["dr_region_switch"]}).allowed


TARGET_MODULES = [f"harness.targets.{t}.{kind}" for t in ("postgres", "redis", "app", "router") for kind in
                  ("probes", "actions")] + ["harness.targets.s3.probes", "harness.failover.region",
                                            "harness.failover.runbook", "harness.failover.failback"]


@pytest.mark.parametrize("module", TARGET_MODULES)
def test_activities_have_the_chaos_toolkit_shape(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__doc__ and "\n" not in mod.__doc__.strip()
    assert mod.__all__
    for name in mod.__all__:
        fn = getattr(mod, name)
        params = list(inspect.signature(fn).parameters)
        assert params[-2:] == ["configuration", "secrets"], f"{module}.{name}"
        assert fn.__doc__, f"{module}.{name} has no docstring"


def test_every_revert_named_by_an_action_is_importable() -> None:
    refs = ["harness.targets.postgres.actions:restore_primary", "harness.targets.postgres.actions:resume_primary",
            "harness.targets.postgres.actions:demote_standby", "harness.targets.postgres.actions:restore_replication",
            "harness.targets.redis.actions:restore_primary", "harness.targets.redis.actions:demote_replica",
            "harness.targets.app.actions:restore_scale", "harness.targets.app.actions:restore_replica",
            "harness.targets.router.actions:clear_override", "harness.failover.failback:fail_back"]
    for ref in refs:
        mod, _, name = ref.partition(":")
        fn = getattr(importlib.import_module(mod), name)
        assert "configuration" in inspect.signature(fn).parameters


# -- lab-only pre-approvals, the preflight of a run, the session's plan --------------------------
def test_lab_approvals_count_only_in_the_lab() -> None:
    lab = {"drill_lab_approvals": ["dr_region_switch"]}
    assert guard.lab_approvals(lab) == {"dr_region_switch"}
    assert guard.context_for(lab, (), PLAN, now=1.0).approved_gates == {"dr_region_switch"}
    staging = {**lab, "drill_environment": "staging", "drill_allowed_environments": ["staging"]}
    assert guard.lab_approvals(staging) == frozenset()
    assert guard.context_for(staging, (), PLAN, now=1.0).approved_gates == frozenset()
    with pytest.raises(SafetyRefusal, match="needs approval for dr_region_switch"):
        guard.approve("dr_region_switch", "fail_over", staging)


def test_the_experiment_files_pre_approve_for_the_lab_only() -> None:
    root = Path(__file__).resolve().parents[2] / "experiments"
    for path in root.glob("*.json"):
        cfg = json.loads(path.read_text()).get("configuration") or {}
        assert "drill_approvals" not in cfg, f"{path.name}: use drill_lab_approvals (lab only)"


def test_gates_of_an_experiment_come_from_the_plan() -> None:
    experiment = json.loads((Path(__file__).resolve().parents[2] / "experiments" / "region-failover.json").read_text())
    assert guard.experiment_gates(experiment, PLAN) == {"fail-over-to-dr-in-catalog-order": ("dr_region_switch",)}
    assert guard.gates_for_activity("harness.targets.router.actions:switch_region", PLAN) == ("dr_region_switch",)
    assert guard.gates_for_activity("harness.failover.region:fail_region", PLAN) == ()


def test_require_gates_refuses_before_any_fault_and_records_no_fault(state: dict,
                                                                     session: drill_session.DrillSession) -> None:
    with pytest.raises(SafetyRefusal, match=r"^not injecting: 'ci-smoke' needs approval for dr_region_switch"):
        guard.require_gates(["dr_region_switch"], state, name="ci-smoke")
    assert session.timeline.of_kind("fault") == ()
    refused = [e for e in session.timeline.of_kind("check") if e.event == "safety preflight refused"]
    assert refused and refused[0].data["status"] == "fail"
    assert guard.require_gates(["dr_region_switch"], {**state, "drill_lab_approvals": ["dr_region_switch"]}).allowed
    session.approvals.add("dr_region_switch")  # --approve
    assert guard.require_gates(["dr_region_switch"], state).allowed


def test_require_gates_checks_the_environment_even_without_gates(state: dict) -> None:
    with pytest.raises(SafetyRefusal, match="not injecting: .*'staging' is not on the allow-list"):
        guard.require_gates([], {**state, "drill_environment": "staging"}, name="drill")
    with pytest.raises(SafetyRefusal, match="needs approval"):  # a lab pre-approval does not reach staging
        guard.require_gates(["dr_region_switch"], {**state, "drill_environment": "staging",
                                                   "drill_allowed_environments": ["staging"],
                                                   "drill_lab_approvals": ["dr_region_switch"]})


def test_the_guard_uses_the_sessions_plan(tmp_path: Path) -> None:
    tight = load_plan(overrides={"services": {"authentication": {"rto_s": 0.001}}})
    s = drill_session.begin("test", "plan", report_dir=tmp_path / "r", plan=tight)
    cfg = {run_context.RUN_ID_KEY: s.run_id}
    try:
        assert guard.plan(cfg) is tight and guard.plan({**cfg, "drill_plan": "ignored.yaml"}) is tight
        assert guard.plan().service("authentication").rto_s != 0.001  # no run named: no process-wide session
    finally:
        drill_session.end()
    assert guard.plan(cfg).service("authentication").rto_s != 0.001  # the run ended: its id names nothing


def test_the_run_context_is_found_by_run_id_and_keeps_typed_refusals(state: dict, tmp_path: Path) -> None:
    """Two runs' contexts coexist; each activity reaches the one its configuration names, and a refusal is
    kept as the SafetyRefusal it was (chaoslib's journal keeps text only)."""
    a = drill_session.DrillSession("run-a", "test", "a", tmp_path / "a", drill_session.Timeline())
    b = drill_session.DrillSession("run-b", "test", "b", tmp_path / "b", drill_session.Timeline())
    run_context.register(a)
    run_context.register(b)
    try:
        b.approvals.add("dr_region_switch")
        with pytest.raises(SafetyRefusal) as refused:
            guard.inject("switch_region", "router:dr", revert=(revert_me, {}), regions=("dr",),
                         configuration=run_context.configuration_for(a, state))
        assert [e for _, e in a.refusals] == [refused.value] and b.refusals == []
        assert [e.data["phase"] for e in a.timeline.of_kind("fault")] == ["refused"]
        inj = guard.inject("switch_region", "router:dr", revert=(revert_me, {}), regions=("dr",),
                           configuration=run_context.configuration_for(b, state))
        assert inj.proceed and inj.entry.run_id == "run-b" and b.fault_t is not None and a.fault_t is None
    finally:
        run_context.unregister(a)
        run_context.unregister(b)
    assert run_context.of({run_context.RUN_ID_KEY: "run-a"}) is None


def test_ledger_preflight_and_this_runs_leftovers(state: dict, session: drill_session.DrillSession) -> None:
    from harness.errors import HarnessError

    led = FaultLedger()
    led.refuse_if_active(session.run_id)  # empty: fine
    mine = guard.inject("kill_primary", "postgres:primary", revert=(revert_me, {}), configuration=state).entry
    other = led.record("cut_replication", "toxiproxy:pg_replication", f"{__name__}:revert_me", {}, run_id="other-run")
    assert [e.id for e in led.active_of_run(session.run_id)] == [mine.id]
    with pytest.raises(HarnessError, match=r"^active faults in the ledger: run `drill recover` \(1 in .*other-run"):
        led.refuse_if_active(session.run_id)
    with pytest.raises(HarnessError, match=r"^not calibrating: active faults in the ledger"):
        led.refuse_if_active(doing="not calibrating")
    assert led.revert_all(how="end of run", run_id=session.run_id) == [(mine, None)]
    assert [e.id for e in led.active()] == [other.id]


def test_a_run_without_a_fault_or_with_a_failed_step_does_not_pass(tmp_path: Path) -> None:
    from harness.drill import finalize

    s = drill_session.begin("test", "rules", report_dir=tmp_path / "r", plan=PLAN)
    try:
        report = finalize.build(s, PLAN)
        assert (report["exit_code"], report["status"]) == (1, "failed")
        assert "injected no fault" in report["error"]
        s.config["drill_dry_run"] = True
        s.event("fault", "fail_region", phase="planned", dry_run=True)
        report = finalize.build(s, PLAN)
        assert report["exit_code"] == 0 and report["dry_run"] is True
        s.failed_steps.append("Then the global endpoint routes to the DR region after 30 seconds: AssertionError")
        report = finalize.build(s, PLAN)
        assert report["exit_code"] == 1 and "scenario step(s) failed: Then the global endpoint" in report["error"]
    finally:
        drill_session.end()


# -- cooldowns: the activation history comes from the fault ledger -------------------------------
def _write_inject(path: Path, fault: str, target: str, injected_at: float, *, action: str | None = None,
                  run_id: str | None = "earlier-run", environment: str | None = None) -> None:
    """An inject record as the guard writes it (details["action"] only when given: older entries lack it)."""
    details: dict = {"target": target}
    if action is not None:
        details["action"] = action
    if environment is not None:
        details["environment"] = environment
    rec = {"op": "inject", "id": f"{fault}-{injected_at:.0f}", "fault": fault, "target": target,
           "revert_func": f"{__name__}:revert_me", "revert_kwargs": {}, "injected_at": injected_at,
           "lease_expires_at": injected_at + 3600, "run_id": run_id, "details": details}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


@pytest.fixture
def ledger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger" / "fault-ledger.jsonl"
    monkeypatch.setenv("DRILL_FAULT_LEDGER", str(path))
    return path


def _promote(configuration: dict) -> guard.Injection:
    return guard.inject("promote_standby", "postgres:dr", action="promote_replica", revert=(revert_me, {}),
                        regions=("dr",), components=("postgresql",), configuration=configuration)


ENFORCE = {"drill_enforce_cooldowns": True}


def test_the_guard_records_the_action_and_environment_in_the_ledger(ledger_file: Path) -> None:
    entry = _promote({}).entry
    assert entry is not None and entry.details["action"] == "promote_replica" and entry.details["environment"] == "lab"
    assert guard.entry_actions(entry) == ("promote_replica",)


def test_history_maps_entries_to_the_plans_cooldowns_and_ignores_unrelated_faults(ledger_file: Path) -> None:
    now = 1_700_000_000.0
    _write_inject(ledger_file, "promote_standby", "postgres:dr", now - 600, action="promote_replica")
    _write_inject(ledger_file, "promote_replica", "redis:dr", now - 500)  # no details["action"]: by fault name
    _write_inject(ledger_file, "fail_over", "region:dr", now - 400, action="fail_over")
    _write_inject(ledger_file, "kill_primary", "postgres:primary", now - 300, action="kill_primary")
    _write_inject(ledger_file, "latency", "toxiproxy:pg", now - 200)
    led = FaultLedger()
    led.mark_reverted("promote_standby-1699999400")  # reverted: still an activation
    hist = guard.activation_history(led.injected(), PLAN)
    assert [(a.cooldown, a.t, a.source) for a in hist] == [
        ("database_failover", now - 600, "promote_standby on postgres:dr"),
        ("database_failover", now - 500, "promote_replica on redis:dr"),
        ("dr_activation", now - 400, "fail_over on region:dr"),
        ("database_failover", now - 400, "fail_over on region:dr"),
    ]
    assert {a.run_id for a in hist} == {"earlier-run"} and {a.environment for a in hist} == {"lab"}


def test_enforcement_is_off_in_the_lab_by_default_and_always_on_outside() -> None:
    assert not guard.enforce_cooldowns(None) and not guard.enforce_cooldowns({"drill_enforce_cooldowns": "false"})
    assert guard.enforce_cooldowns(ENFORCE) and guard.enforce_cooldowns({"drill_enforce_cooldowns": "true"})
    prod = {"drill_environment": "prod", "drill_enforce_cooldowns": False}
    assert guard.enforce_cooldowns(prod)  # outside the lab it cannot be switched off
    assert guard.context_for(None, (), PLAN, now=1.0).enforce_cooldowns is None
    assert guard.context_for(ENFORCE, (), PLAN, now=1.0).enforce_cooldowns is True
    assert guard.context_for(prod, (), PLAN, now=1.0).enforce_cooldowns is True


def test_a_second_failover_within_the_cooldown_is_refused_when_enforced(
        ledger_file: Path, session: drill_session.DrillSession) -> None:
    import time

    _write_inject(ledger_file, "promote_standby", "postgres:dr", time.time() - 12 * 60, action="promote_replica",
                  run_id="run-a")
    with pytest.raises(SafetyRefusal) as err:
        _promote({**ENFORCE, run_context.RUN_ID_KEY: session.run_id})
    reason = str(err.value)
    assert reason.startswith("not injecting: 'promote_standby': cooldown database_failover (1h): last activation 12m")
    assert "(run run-a, promote_standby on postgres:dr), wait 4" in reason and "\n" not in reason
    assert len(FaultLedger().injected()) == 1  # nothing written
    refused = [e for e in session.timeline.of_kind("fault") if e.data["phase"] == "refused"]
    assert refused and refused[0].data["guard"] == "cooldown"
    with pytest.raises(SafetyRefusal, match="cooldown database_failover"):  # check(), for actions that read first
        guard.check("promote_standby", "postgres:dr", action="promote_replica", configuration=ENFORCE)
    # the lab repeats its drills: no cooldown there by default
    assert _promote({}).proceed


def test_the_runbooks_fail_over_is_a_dr_activation(ledger_file: Path) -> None:
    import time

    _write_inject(ledger_file, "fail_over", "region:dr", time.time() - 3 * 3600, action="fail_over")
    cfg = {**ENFORCE, "drill_approvals": ["dr_region_switch"]}
    with pytest.raises(SafetyRefusal, match=r"^not injecting: 'fail_over': cooldown dr_activation \(1d\): last "
                                            r"activation 3h ago .*, wait 21h"):
        guard.approve("dr_region_switch", "fail_over", cfg)
    with pytest.raises(SafetyRefusal, match="cooldown dr_activation"):
        guard.inject("fail_over", "region:dr", revert=(revert_me, {}), gate="dr_region_switch", configuration=cfg)
    # 3 h after the fail_over, a database failover is allowed again
    assert _promote(ENFORCE).proceed


def test_allowed_once_the_cooldown_has_passed(ledger_file: Path) -> None:
    import time

    _write_inject(ledger_file, "promote_standby", "postgres:dr", time.time() - 3601, action="promote_replica")
    _write_inject(ledger_file, "switch_region", "router:dr", time.time() - 25 * 3600, action="switch_region")
    assert _promote(ENFORCE).proceed
    assert guard.inject("switch_region", "router:dr", revert=(revert_me, {}), regions=("dr",),
                        configuration={**ENFORCE, "drill_approvals": ["dr_region_switch"]}).proceed


def test_unrelated_faults_other_environments_and_this_run_do_not_cool_down(
        ledger_file: Path, session: drill_session.DrillSession) -> None:
    import time

    now = time.time()
    for fault in ("kill_primary", "stop_primary", "fail_region", "cut_replication"):
        _write_inject(ledger_file, fault, "postgres:primary", now - 60, action=fault)
    _write_inject(ledger_file, "promote_standby", "postgres:dr", now - 60, action="promote_replica",
                  environment="staging")
    _write_inject(ledger_file, "promote_replica", "redis:dr", now - 60, run_id=session.run_id)  # this drill's step
    mine = {**ENFORCE, run_context.RUN_ID_KEY: session.run_id}
    assert guard.activations(mine, PLAN) == ()
    assert [a.run_id for a in guard.activations(ENFORCE, PLAN)] == [session.run_id]  # seen from no run
    assert _promote(mine).proceed
    staging = {"drill_environment": "staging", "drill_allowed_environments": ["staging"]}
    assert [a.source for a in guard.activations(staging, PLAN)] == ["promote_standby on postgres:dr"]
    with pytest.raises(SafetyRefusal, match="cooldown database_failover"):  # outside the lab: always
        _promote(staging)


def test_dry_runs_and_refusals_are_no_activations(ledger_file: Path) -> None:
    assert not _promote({**ENFORCE, "drill_dry_run": True}).proceed
    assert _promote(ENFORCE).proceed  # the dry run left nothing to cool down from
    with pytest.raises(SafetyRefusal):
        _promote(ENFORCE)
    assert len(FaultLedger().injected()) == 1


def test_the_preflight_refuses_a_dr_drill_inside_its_cooldown_before_any_fault(
        ledger_file: Path, session: drill_session.DrillSession) -> None:
    import time

    _write_inject(ledger_file, "fail_over", "region:dr", time.time() - 1800, action="fail_over")
    cfg = {**ENFORCE, "drill_lab_approvals": ["dr_region_switch"], run_context.RUN_ID_KEY: session.run_id}
    with pytest.raises(SafetyRefusal, match=r"^not injecting: 'region-failover': cooldown dr_activation"):
        guard.require_gates(["dr_region_switch"], cfg, name="region-failover")
    assert session.timeline.of_kind("fault") == ()
    assert [e.data["status"] for e in session.timeline.of_kind("check")] == ["fail"] and len(session.refusals) == 1
    assert guard.require_gates(["dr_region_switch"], {"drill_lab_approvals": ["dr_region_switch"]}).allowed  # lab
    with pytest.raises(SafetyRefusal, match="cooldown database_failover"):
        guard.require_gates([], cfg, cooldowns=["database_failover"])


def test_the_promote_standby_activity_is_refused_before_it_touches_the_lab(state: dict, ledger_file: Path) -> None:
    import time

    from harness.errors import ExitCode
    from harness.targets.postgres.actions import promote_standby

    _write_inject(ledger_file, "promote_standby", "postgres:dr", time.time() - 300, action="promote_replica")
    with pytest.raises(SafetyRefusal, match="cooldown database_failover") as err:
        promote_standby("dr", configuration={**state, **ENFORCE})  # no lab runs here: refused first
    assert err.value.exit_code == ExitCode.REFUSED_BY_SAFETY == 5


def test_the_runner_tells_a_refused_activity_by_the_typed_refusal_not_its_text(state: dict, tmp_path: Path) -> None:
    """chaoslib's journal keeps an activity's error as text; the runner asks the run context whether the guard
    refused while the activity ran. A failure whose text merely mentions SafetyRefusal is a harness error."""
    from datetime import datetime, timezone

    from harness.drill import runner

    def run(name: str, start: float, end: float, error: str) -> dict:
        return {"status": "failed", "activity": {"name": name}, "exception": [error],
                "start": datetime.fromtimestamp(start, timezone.utc).isoformat(),
                "end": datetime.fromtimestamp(end, timezone.utc).isoformat()}

    import time

    s = drill_session.begin("test", "runner", report_dir=tmp_path / "r", plan=PLAN)
    try:
        t0 = time.time()
        with pytest.raises(SafetyRefusal) as refused:
            guard.inject("switch_region", "router:dr", revert=(revert_me, {}), regions=("dr",),
                         configuration=run_context.configuration_for(s, state))
        t1 = time.time()
        journal = {"run": [run("lookalike", t0 - 10, t0 - 5, "RuntimeError: not a SafetyRefusal\n"),
                           run("switch", t0, t1, f"harness.errors.SafetyRefusal: {refused.value}\n")]}
        runner._note_failed_activities(s, journal)
        assert s.harness_error == "activity lookalike failed: RuntimeError: not a SafetyRefusal"
        assert s.refused and str(refused.value) in s.refused
        assert any(n.startswith("refused by safety in switch: ") for n in s.notes)
    finally:
        drill_session.end()
