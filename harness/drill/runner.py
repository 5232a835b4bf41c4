"""`drill run`: resolve the target (experiment, feature or profile), bring the lab up, run it, report, exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.core.timeline import Event
from harness.drill import profiles
from harness.drill import session as drill_session
from harness.errors import ExitCode, HarnessError, UsageError

PLANNED_PROFILES = ("monthly-chaos", "semiannual-simulation", "tabletop")
KNOWN_GATES = ("dr_region_switch", "data_restore_from_backup", "database_point_in_time_recovery")


@dataclass(frozen=True)
class Target:
    kind: str  # "experiment" | "feature" | "profile"
    path: Path
    profile: profiles.Profile | None = None

    @property
    def run_kind(self) -> str:
        return self.profile.name if self.profile else self.kind


def resolve_target(target: str) -> Target:
    p = Path(target)
    if p.suffix in (".json", ".yaml", ".yml"):
        if not p.is_file():
            raise UsageError(f"experiment file {target!r} does not exist")
        return Target("experiment", p.resolve())
    if p.suffix == ".feature":
        if not p.is_file():
            raise UsageError(f"feature file {target!r} does not exist")
        return Target("feature", p.resolve())
    prof = profiles.get(target)
    if prof is not None:
        path = prof.experiment_path()
        return Target("profile", path, prof)
    if target in PLANNED_PROFILES:
        raise UsageError(f"profile {target!r} has no experiment yet (available: {', '.join(profiles.PROFILES)})")
    raise UsageError(f"unknown target {target!r}: not an experiment (.json), a feature (.feature) or a profile "
                     f"({', '.join(profiles.PROFILES)})")


def _printer(console) -> Callable[[Event], None]:
    """Live progress: faults, failover steps, checks and notes as they happen (not every probe or write)."""
    from rich.markup import escape

    t0 = time.time()
    styles = {"fault": "bold red", "failover": "bold yellow", "check": "cyan", "note": "dim"}

    def show(e: Event) -> None:
        if e.kind in ("op", "probe"):
            return
        if e.kind == "note" and (e.event.startswith("action started") or e.event.startswith("probe started")):
            return
        extra = ""
        if e.kind == "check" and "status" in e.data:
            colour = {"pass": "green", "fail": "red", "warning": "yellow"}.get(e.data["status"], "")
            extra = f" [{colour}]{escape(str(e.data['status']))}[/]" if colour else f" {escape(str(e.data['status']))}"
        if e.kind == "fault":
            extra = f" ({escape(str(e.data.get('phase', 'inject')))})"
        console.print(f"[dim]{e.t - t0:7.2f}s[/] [{styles.get(e.kind, '')}]{e.kind:<8}[/] {escape(e.event)}{extra}",
                      highlight=False)

    return show


def ensure_lab(console, state_dir: str | None) -> dict[str, Any]:
    from harness.lab.manager import Lab

    lab = Lab(state_dir)
    topo = lab.up(progress=lambda m: console.print(f"[dim]lab:[/] {m}", highlight=False))
    return topo


def run(target: str, *, report_dir: Path | None = None, dry_run: bool = False, approvals: tuple[str, ...] = (),
        plan_overrides: str | None = None, state_dir: str | None = None, console=None) -> int:
    """Run one drill and return its exit code (the report says why)."""
    from rich.console import Console

    console = console or Console(stderr=True)
    for gate in approvals:
        if gate not in KNOWN_GATES:
            raise UsageError(f"--approve {gate!r} is not a gate of the plan ({', '.join(KNOWN_GATES)})")
    overrides = _load_overrides(plan_overrides)
    t = resolve_target(target)
    if state_dir:
        os.environ["DRILL_STATE_DIR"] = str(Path(state_dir).resolve())
    if t.kind == "feature":
        return _run_feature(t, report_dir, approvals, plan_overrides, dry_run, console)
    ensure_lab(console, state_dir)
    s = drill_session.begin(t.run_kind, str(target), report_dir=report_dir, listeners=(_printer(console),))
    s.approvals |= set(approvals)
    if t.profile:
        s.approvals |= set(t.profile.lab_approvals)
        if t.profile.lab_approvals:
            s.note(f"lab pre-approval by profile {t.profile.name}: {', '.join(t.profile.lab_approvals)}")
    s.config["drill_plan_overrides"] = overrides
    console.print(f"[bold]drill[/] run [cyan]{s.run_id}[/] ({t.run_kind}) → {s.report_dir}", highlight=False)
    return _run_experiment(s, t, dry_run, console)


def _load_overrides(path: str | None) -> dict | None:
    if not path:
        return None
    from harness.config import read_yaml

    data = read_yaml(Path(path))
    if data is not None and not isinstance(data, dict):
        raise UsageError(f"plan overrides {path!r} must be a mapping")
    return data or None


def _run_experiment(s, t: Target, dry_run: bool, console) -> int:
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid
    from chaoslib.loader import load_experiment
    from chaoslib.run import Runner
    from chaoslib.types import Strategy

    from harness.config import load_plan
    from harness.drill import finalize

    try:
        experiment = load_experiment(str(t.path))
        ensure_experiment_is_valid(experiment)
    except (ChaosException, OSError, ValueError) as e:
        drill_session.end()
        raise UsageError(f"invalid experiment {t.path}: {e}") from e
    cfg = experiment.setdefault("configuration", {})
    cfg["drill_kind"] = t.run_kind
    if t.profile:
        cfg.update({k: v for k, v in t.profile.configuration.items()})
    if dry_run:
        cfg["drill_dry_run"] = True
    cfg["drill_approvals"] = sorted(s.approvals)
    settings = {"runtime": {"rollbacks": {"strategy": "always"}, "hypothesis": {"strategy": "default"}}}
    error: BaseException | None = None
    journal: dict | None = None
    prev_int = signal.getsignal(signal.SIGINT)
    try:
        with Runner(Strategy.DEFAULT) as runner:
            journal = runner.run(experiment, settings=settings)
    except KeyboardInterrupt:
        s.aborted = True
    except Exception as e:  # the harness itself broke: report it, exit 1
        error = e
        s.harness_error = f"{type(e).__name__}: {e}"
    finally:
        signal.signal(signal.SIGINT, prev_int)
    if journal is None:
        journal = s.journal
    if journal and journal.get("status") in ("interrupted", "aborted"):
        s.aborted = True
    _note_failed_activities(s, journal)
    _note_steady_state(s, journal, dry_run)
    plan = load_plan(overrides=s.config.get("drill_plan_overrides"))
    report = finalize.write(s, plan, journal=journal, error=error, refused=bool(s.refused))
    drill_session.end()
    _summarise(report, console)
    return int(report["exit_code"])


def _note_failed_activities(s, journal: dict | None) -> None:
    """A raising activity does not fail a Chaos Toolkit run by itself; the drill records why it failed."""
    if not journal:
        return
    for run in journal.get("run", []) + [r for r in (journal.get("rollbacks") or [])]:
        if run.get("status") == "failed":
            exc = "".join(run.get("exception") or [])
            last = exc.strip().splitlines()[-1] if exc.strip() else "failed"
            name = run.get("activity", {}).get("name")
            if "SafetyRefusal" in exc:
                s.refused = last
                s.note(f"refused by safety in {name}: {last}")
            elif s.harness_error is None:
                s.harness_error = f"activity {name} failed: {last}"
                s.note(f"activity {name} failed: {last}")


def _note_steady_state(s, journal: dict | None, dry_run: bool) -> None:
    """A drill whose system was not in steady state, or that injected nothing, did not pass."""
    if not journal or s.aborted or s.harness_error or s.refused:
        return
    states = journal.get("steady_states") or {}
    for when in ("before", "after"):
        st = states.get(when) or {}
        if st and not st.get("steady_state_met"):
            bad = [p["activity"]["name"] for p in st.get("probes", []) if not p.get("tolerance_met", True)]
            s.harness_error = (f"steady state hypothesis not met {when} the method"
                               + (f": {', '.join(bad)}" if bad else ""))
            s.note(s.harness_error)
            return
    if journal.get("deviated"):
        s.harness_error = "the steady state deviated after the method"
        return
    if s.fault_t is None and not dry_run:
        s.harness_error = "the experiment injected no fault: nothing was measured"
        s.note(s.harness_error)


def _summarise(report: dict, console) -> None:
    from harness.report.console import print_summary

    paths = {k: Path(v) for k, v in report.get("_paths", {}).items()}
    print_summary(report, console, paths=paths)


def _run_feature(t: Target, report_dir: Path | None, approvals: tuple[str, ...], plan_overrides: str | None,
                 dry_run: bool, console) -> int:
    """A .feature file runs through pytest-bdd; its steps write the report; the exit code comes from it."""
    rid = drill_session.new_run_id("feature")
    rdir = Path(report_dir) if report_dir else Path(os.environ.get("DRILL_REPORTS_DIR", "reports")) / rid
    rdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"DRILL_REPORT_DIR": str(rdir.resolve()), "DRILL_RUN_ID": rid, "DRILL_FEATURE": str(t.path),
                "DRILL_APPROVALS": ",".join(approvals)})
    if plan_overrides:
        env["DRILL_PLAN_OVERRIDES"] = str(Path(plan_overrides).resolve())
    if dry_run:
        env["DRILL_DRY_RUN"] = "1"
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests" / "test_features.py"),
           "--junitxml", str(rdir / "pytest-junit.xml")]
    console.print(f"[bold]drill[/] run [cyan]{rid}[/] (feature {t.path.name}) → {rdir}", highlight=False)
    proc = subprocess.run(cmd, cwd=root, env=env)
    report_path = rdir / "report.json"
    if not report_path.exists():
        console.print(f"drill: error: the feature run wrote no report (pytest exit {proc.returncode})")
        return ExitCode.HARNESS_ERROR if proc.returncode != 2 else ExitCode.INTERRUPTED
    report = json.loads(report_path.read_text())
    report["_paths"] = {"json": str(report_path), "md": str(rdir / "report.md"), "html": str(rdir / "report.html")}
    _summarise(report, console)
    return int(report["exit_code"])
