"""`drill run`: resolve the target (experiment, feature or profile), bring the lab up, run it, report, exit code."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from harness.config import load_plan, read_yaml
from harness.config.environment import load_environment, resolve_references
from harness.core.timeline import Event
from harness.core import catalog as catalog_core
from harness.drill import catalog, control, finalize, profiles
from harness.drill import session as drill_session
from harness.errors import ExitCode, HarnessError, SafetyRefusal, UsageError
from harness.lab.manager import Lab
from harness.lab.paths import state_dir as lab_state
from harness.report import write_report
from harness.report.console import print_summary
from harness.report.i18n import check_lang
from harness.report.notify import NOTIFY_PREFIX, NotifyConfig
from harness.report import profile as profile_report
from harness.safety import context as run_context
from harness.safety import guard
from harness.safety.fault_ledger import FaultLedger, ledger_path

@dataclass(frozen=True)
class Target:
    kind: str  # "experiment" | "feature" | "profile"
    path: Path
    profile: profiles.Profile | None = None

    @property
    def run_kind(self) -> str:
        return self.profile.name if self.profile else self.kind


def _check_file(target: str, what: str) -> Path:
    p = Path(target)
    if p.is_dir():
        raise UsageError(f"{what} {target!r} is a directory, not a file")
    if not p.is_file():
        raise UsageError(f"{what} {target!r} " + ("is not a regular file" if p.exists() else "does not exist"))
    return p.absolute()  # not resolved: a symlink keeps the name (and suffix) the user gave


def resolve_target(target: str) -> Target:
    p = Path(target)
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        return Target("experiment", _check_file(target, "experiment file"))
    if p.suffix.lower() == ".feature":
        return Target("feature", _check_file(target, "feature file"))
    prof = profiles.get(target)
    if prof is not None:
        path = prof.experiment_path()
        return Target("profile", path, prof)
    raise UsageError(f"unknown target {target!r}: not an experiment (.json), a feature (.feature) or a profile "
                     f"({', '.join(profiles.PROFILES)})")


def _printer(console) -> Callable[[Event], None]:
    """Live progress: faults, failover steps, checks and notes as they happen (not every probe or write)."""
    from rich.markup import escape

    from harness.core.report import redact

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
        secrets = tuple(show.secrets)  # the console is a log too: the run's secrets are redacted
        text = redact(e.event, secrets) if secrets else e.event
        console.print(f"[dim]{e.t - t0:7.2f}s[/] [{styles.get(e.kind, '')}]{e.kind:<8}[/] {escape(text)}{extra}",
                      highlight=False)

    show.secrets = set()  # the run's session.secrets once it has begun (the same set, filled in place)
    return show


def ensure_lab(console, state_dir: str | None) -> dict[str, Any]:
    lab = Lab(state_dir)
    topo = lab.up(progress=lambda m: console.print(f"[dim]lab:[/] {m}", highlight=False))
    return topo


#: experiment configuration keys the session (finalize, the report) reads
SESSION_KEYS = ("drill_expects_fault", "drill_expected_level", "drill_tier", "drill_time_scale", "drill_level")


def split_approvals(approvals: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """`--approve GATE[=WHO]` values -> (gate names, {gate: who}); an empty WHO after '=' is a usage error."""
    names: list[str] = []
    who: dict[str, str] = {}
    for a in approvals:
        gate, eq, name = a.partition("=")
        gate, name = gate.strip(), name.strip()
        if eq and not name:
            raise UsageError(f"--approve {a!r}: no approver after '=' (GATE=WHO, e.g. dr_region_switch=cto)")
        names.append(gate)
        if name:
            who[gate] = name
    return tuple(dict.fromkeys(names)), who


def known_gates(plan=None) -> tuple[str, ...]:
    """The approval gates of the plan (the packaged one unless given)."""
    return tuple(g.name for g in (plan or guard.plan()).gates)


def __getattr__(name: str) -> Any:
    if name == "KNOWN_GATES":  # the plan's gates, read when asked for (loading the plan is not free)
        return known_gates()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(target: str, *, report_dir: Path | None = None, dry_run: bool = False, approvals: tuple[str, ...] = (),
        plan_overrides: str | None = None, state_dir: str | None = None, console=None,
        environment: str | None = None, allow_env: tuple[str, ...] = (), lang: str | None = None,
        tier: str | None = None, scenarios: tuple[str, ...] = (), profile: profiles.Profile | None = None,
        scenario: dict[str, Any] | None = None) -> int:
    """Run one drill and return its exit code (the report says why).

    Everything that can be refused is checked before the lab is touched (target, plan overrides, --approve
    names, the experiment) or before the first fault (faults of another run in the ledger, the environment
    allow-list and every approval gate the run will need).
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    given_approvals = approvals  # GATE=WHO as given: a profile passes them on to each scenario's run
    approvals, approvers = split_approvals(approvals)
    t = resolve_target(target)
    if t.kind == "profile" and t.profile is not None and t.profile.draws:
        return run_profile(t.profile, only=scenarios, report_dir=report_dir, dry_run=dry_run, approvals=given_approvals,
                           plan_overrides=plan_overrides, state_dir=state_dir, console=console,
                           environment=environment, allow_env=allow_env, lang=lang, tier=tier)
    if scenarios:
        raise UsageError(f"--scenario applies to the profiles that draw catalog scenarios "
                         f"({', '.join(profiles.drawing_profiles())}), not to {target!r}")
    if profile is not None:  # a scenario drawn by a profile: the profile's settings, the scenario's file
        t = Target(t.kind, t.path, profile)
    env = load_environment(environment)  # a bad environment file: exit 2, before the lab is touched
    if t.kind == "feature" and env.name != "lab":
        raise UsageError(f"--env {env.name!r}: features run against the lab environment only")
    if t.kind == "feature":
        _check_feature(t.path)
    overrides = _load_overrides(plan_overrides)
    if state_dir:
        os.environ["DRILL_STATE_DIR"] = str(Path(state_dir).resolve())
    experiment = _load_experiment(t, dry_run, approvals) if t.kind != "feature" else None
    unprobed = None
    if experiment is not None:
        env = _scenario_environment(experiment, env)
        _apply_environment(experiment, env, allow_env)
        if dry_run and not env.embedded:  # its probes would read the real system: a dry run sends nothing
            unprobed = experiment.pop("steady-state-hypothesis", None)
    cfg = _resolved_configuration(experiment) if experiment is not None else {}
    # the run's plan, once (a bad override or plan file is a usage error, exit 2, before the lab is touched)
    plan = load_plan(cfg.get("drill_plan"), overrides=overrides)
    if tier is not None:
        tiers = [x.name for x in plan.tiers]
        if tier not in tiers:
            raise UsageError(f"--tier {tier!r} is not a tier of the plan ({', '.join(tiers)})")
        if experiment is None:
            raise UsageError("--tier applies to experiments and profiles, not to features")
        cfg["drill_tier"] = experiment["configuration"]["drill_tier"] = tier
    gates = known_gates(plan)
    for gate in approvals:
        if gate not in gates:
            raise UsageError(f"--approve {gate!r} is not a gate of the plan ({', '.join(gates)})")
    check_report_dir(report_dir)
    lang = check_lang(lang or cfg.get("drill_lang"))
    NotifyConfig.from_sources(cfg)  # a bad notification setting: exit 2, before the lab is touched
    if experiment is None:
        return _run_feature(t, report_dir, approvals, plan_overrides, dry_run, console, lang)

    guard.ledger(cfg).refuse_if_active()  # faults of an earlier run still in place: `drill recover` first
    topology = ensure_lab(console, state_dir) if env.embedded else None
    # lab-cloud needs a lab serving its APIs; a real run needs its secrets (a dry run sends nothing, needs none)
    _, env_secrets = resolve_references(env, topology=topology, strict=env.embedded or not dry_run)
    _point_chaosk8s(experiment, env, topology)
    with drill_session.SIGNALS:
        printer = _printer(console)
        s = drill_session.begin(t.run_kind, str(target), report_dir=report_dir, listeners=(printer,),
                                plan=plan, config={"drill_plan_overrides": overrides, "drill_dry_run": dry_run,
                                                   "drill_lang": lang, "drill_scenario": scenario,
                                                   **{k: cfg[k] for k in cfg if k in SESSION_KEYS
                                                      or k.startswith(NOTIFY_PREFIX)}})
        s.approvals |= set(approvals)
        for gate in approvals:
            s.record_approval(gate, approvers.get(gate) or "operator (unnamed: --approve GATE=WHO names them)",
                              "--approve")
        printer.secrets = s.secrets
        _begin_environment(s, env, env_secrets, dry_run)
        if unprobed:
            s.note(f"steady state not probed: a dry run against {env.name} sends nothing "
                   f"({len(unprobed.get('probes') or [])} probes skipped)")
        # the run context travels in the configuration: every activity (and the preflight) finds it by run id
        cfg[run_context.RUN_ID_KEY] = experiment["configuration"][run_context.RUN_ID_KEY] = s.run_id
        if guard.lab_approvals(cfg):
            s.note(f"lab pre-approval ({'profile ' + t.profile.name if t.profile else 'drill_lab_approvals'}): "
                   f"{', '.join(sorted(guard.lab_approvals(cfg)))}")
            for gate in sorted(guard.lab_approvals(cfg) - set(approvals)):
                s.record_approval(gate, f"lab pre-approval ({'profile ' + t.profile.name if t.profile else 'drill_lab_approvals'})",
                                  "lab")
        if str(cfg.get("drill_environment") or "lab") == "lab":
            drill_session.register_lab_secrets(s, cfg.get("drill_state_dir"))
        console.print(f"[bold]drill[/] run [cyan]{s.run_id}[/] ({t.run_kind}) → {s.report_dir}", highlight=False)
        return _run_experiment(s, t, experiment, cfg, dry_run, console)


def _scenario_environment(experiment: dict, env):
    """The environment of the run: an experiment naming an embedded environment in `drill_lab_environment` (e.g.
    lab-cloud: its faults go through the lab's Kubernetes API) runs in it when --env is the plain lab."""
    want = (experiment.get("configuration") or {}).get(catalog.LAB_ENVIRONMENT_KEY)
    if not want or env.name != "lab" or want == env.name:
        return env
    other = load_environment(str(want))
    if not other.embedded:
        raise UsageError(f"configuration.{catalog.LAB_ENVIRONMENT_KEY} {want!r} is of kind {other.kind}: it names "
                         f"an embedded environment (lab or lab-cloud) only")
    return other


def _point_chaosk8s(experiment: dict, env, topology: dict | None) -> None:
    """chaostoolkit-kubernetes builds its own clients from KUBECONFIG (read when kubernetes.config is first
    imported) and the KUBERNETES_CONTEXT of an activity's secrets: point both at the environment (the embedded
    lab: its own kubeconfig), before any chaosk8s import. Secret scopes `kubernetes-<region>` get the
    environment's context of that region; configuration `kerp_namespace` its namespace."""
    data, _ = resolve_references(env, topology=topology, strict=False)
    kube = dict(data.get("kubernetes") or {})
    lab_kube = (topology or {}).get("kubernetes") or {} if env.embedded else {}
    kubeconfig = kube.get("kubeconfig") or lab_kube.get("kubeconfig")
    if not kubeconfig or "${" in str(kubeconfig):
        return
    os.environ["KUBECONFIG"] = str(kubeconfig)
    loaded = sys.modules.get("kubernetes.config.kube_config")
    if loaded is not None:  # imported already (by the lab's health checks): same effect as KUBECONFIG before it
        loaded.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    contexts = {r: (v or {}).get("kubernetes_context") for r, v in (data.get("regions") or {}).items()}
    contexts = {r: c or (lab_kube.get("contexts") or {}).get(r) for r, c in contexts.items()}
    for region, context in contexts.items():
        scope = (experiment.get("secrets") or {}).get(f"kubernetes-{region}")
        if isinstance(scope, dict) and context and "${" not in str(context):
            scope["KUBERNETES_CONTEXT"] = context
    namespace = kube.get("namespace") or lab_kube.get("namespace")
    cfg = experiment.get("configuration") or {}
    if "kerp_namespace" in cfg and namespace and "${" not in str(namespace):
        cfg["kerp_namespace"] = namespace


def _apply_environment(experiment: dict, env, allow_env: tuple[str, ...]) -> None:
    """The environment's keys in the experiment's configuration; the guard's allow-list is this environment
    only when its file allows faults AND the operator named it (--allow-env, $DRILL_ALLOWED_ENVIRONMENTS): an
    experiment's own drill_allowed_environments is replaced, a file cannot allow itself."""
    from harness.config.environment import allowed_environments

    cfg = experiment.setdefault("configuration", {})
    if env.name != "lab" or "drill_environment" not in cfg:  # --env lab keeps an experiment's own setting
        cfg.update(env.configuration())
    if not env.embedded:
        cfg["drill_allowed_environments"] = sorted(env.allowed_by(allowed_environments(allow_env)))
    elif str(cfg.get("drill_environment") or "lab") != "lab":  # an experiment naming its own environment
        cfg["drill_allowed_environments"] = sorted({str(cfg["drill_environment"])} & allowed_environments(allow_env))


def _begin_environment(s, env, secrets: set[str], dry_run: bool) -> None:
    """The run context: its environment, a dry run's recorder, the environment's resolved secrets (redacted by
    value from the timeline, the journal and the report)."""
    from harness.dryrun import DryRunRecorder

    s.environment = env
    if dry_run and env.kind != "lab":  # on the plain lab a dry run's probes read the real lab; the guard keeps faults out
        s.recorder = DryRunRecorder()
    s.secrets |= set(secrets)
    s.note(f"environment {env.name} ({env.kind}) from {env.source}")


def check_report_dir(report_dir: Path | str | None, option: str = "--report-dir") -> None:
    """UsageError (exit 2, before the lab is touched) unless the report directory (default: DRILL_REPORTS_DIR or
    ./reports) exists or can be created, and a file can be written in it."""
    import tempfile

    given = report_dir is not None
    d = Path(report_dir) if given else Path(os.environ.get("DRILL_REPORTS_DIR", "reports"))
    what = f"{option} {str(d)!r}" if given else f"report directory {str(d)!r}"
    created: list[Path] = []  # the check leaves nothing behind: a run refused later must not leave a report dir
    try:
        missing = [a for a in (d, *d.parents) if not a.exists()]
        for a in reversed(missing):
            a.mkdir()
            created.append(a)
        with tempfile.TemporaryFile(dir=d):
            pass
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise UsageError(f"{what} is not a writable directory: {getattr(e, 'strerror', None) or e}") from e
    finally:
        for a in reversed(created):
            with contextlib.suppress(OSError):
                a.rmdir()


def _check_feature(path: Path) -> None:
    """A feature is parsed strictly and its steps matched (as `drill validate` does) before anything runs."""
    from harness.drill.validate import validate_feature

    steps = Path(__file__).resolve().parents[2] / "steps"  # the steps package the feature run binds
    r = validate_feature(path, steps_dir=steps if (steps / "__init__.py").is_file() else None)
    if not r.ok:
        raise UsageError(r.line().replace("invalid ", "invalid feature ", 1))


def _nothing_leaves(s):
    """A dry run against a real environment: every AWS and Kubernetes client of the process records its calls
    and sends none (also those chaosaws and chaostoolkit-kubernetes activities build themselves)."""
    import contextlib

    if s.recorder is None or s.environment is None or s.environment.embedded:
        return contextlib.nullcontext()
    from harness.dryrun import intercept_process

    return intercept_process(s.recorder)


def _dry_mode(s):
    """A dry run through APIs (every environment but the plain lab): probes are not run (the clients' answers
    are the recorder's empty ones, so no steady state can be judged); actions run with every call recorded and
    none sent."""
    if s.recorder is None or s.environment is None or s.environment.kind == "lab":
        return None
    from chaoslib.types import Dry

    return Dry.PROBES


def _load_overrides(path: str | None) -> dict | None:
    if not path:
        return None
    data = read_yaml(Path(path))
    if data is not None and not isinstance(data, dict):
        raise UsageError(f"plan overrides {path!r} must be a mapping")
    return data or None


def _load_experiment(t: Target, dry_run: bool, approvals: tuple[str, ...]) -> dict:
    """The experiment, validated, with the run's configuration: the profile's settings and lab pre-approvals
    (they replace the file's drill_lab_approvals), --dry-run, and --approve as drill_approvals (the only
    approvals outside the lab)."""
    from harness.drill.validate import experiment_problems, load_experiment_file

    experiment = load_experiment_file(t.path)  # UsageError naming the file (and line) when it does not parse
    problems = experiment_problems(experiment)
    if problems:
        more = f" (+{len(problems) - 1} more: drill validate {t.path})" if len(problems) > 1 else ""
        raise UsageError(f"invalid experiment {t.path}: {problems[0]}{more}")
    if experiment.get("configuration") is None:
        experiment["configuration"] = {}
    cfg = experiment["configuration"]
    cfg["drill_kind"] = t.run_kind
    if t.profile and t.profile.draws:  # a drawn scenario: its own pre-approvals and the profile's, unless the
        own = [] if t.profile.explicit_approval else list(cfg.get("drill_lab_approvals") or [])  # profile wants
        cfg.update({k: v for k, v in t.profile.configuration.items()})                        # named approvers
        cfg["drill_lab_approvals"] = sorted(set(own) | set(t.profile.lab_approvals))
    elif t.profile:
        cfg.update({k: v for k, v in t.profile.configuration.items()})
        cfg["drill_lab_approvals"] = list(t.profile.lab_approvals)
    if dry_run:
        cfg["drill_dry_run"] = True
    cfg["drill_approvals"] = sorted(approvals)
    return experiment


def _resolved_configuration(experiment: dict) -> dict[str, Any]:
    """The experiment's configuration as chaoslib will resolve it (env values), for the preflight."""
    from chaoslib.configuration import load_configuration
    from chaoslib.exceptions import ChaosException

    try:
        return dict(load_configuration(dict(experiment.get("configuration") or {})) or {})
    except (ChaosException, KeyError, ValueError) as e:
        raise UsageError(f"invalid experiment configuration: {e}") from e


def _run_experiment(s, t: Target, experiment: dict, cfg: dict[str, Any], dry_run: bool, console) -> int:
    from chaoslib.run import Runner
    from chaoslib.types import Strategy

    settings = {"runtime": {"rollbacks": {"strategy": "always"}, "hypothesis": {"strategy": "default"}}}
    error: BaseException | None = None
    journal: dict | None = None
    try:
        needed = guard.experiment_gates(experiment, s.plan)
        guard.require_gates([g for gs in needed.values() for g in gs], cfg,
                            name=t.run_kind if t.profile else t.path.name)
        if s.environment is not None and not s.environment.embedded:  # before any call to a real environment
            from harness import clients

            clients.preflight_aws(s.environment, s.recorder)
    except SafetyRefusal as e:  # before the first fault: nothing ran, nothing to roll back
        s.refused = str(e)
        s.note(f"refused by safety before the first fault: {e}")
        console.print(f"drill: {e}", markup=False, highlight=False, soft_wrap=True)
        return _finish(s, None, None, console)
    try:
        with Runner(Strategy.DEFAULT) as runner, _nothing_leaves(s):
            if _dry_mode(s) is not None:
                experiment["dry"] = _dry_mode(s)
            journal = runner.run(experiment, settings=settings)
    except KeyboardInterrupt:
        s.aborted = True
    except Exception as e:  # the harness itself broke: report it, exit 1
        error = e
        s.harness_error = f"{type(e).__name__}: {e}"
    with drill_session.SIGNALS.shielded():
        drill_session.note_signals(s, "(recorded; the run was interrupted and rolled back)")
        if journal is None:
            journal = s.journal
        if journal and journal.get("status") in ("interrupted", "aborted"):
            s.aborted = True
        _note_failed_activities(s, journal)
        _note_steady_state(s, journal, dry_run)
        control.revert_leftovers(s, cfg)
        if s.refused:  # refused in the method (the pre-fault gate, a guard): the one line on the console too
            console.print(f"drill: {s.refused}", markup=False, highlight=False, soft_wrap=True)
        return _finish(s, journal, error, console)


def _finish(s, journal: dict | None, error: BaseException | None, console) -> int:
    with drill_session.SIGNALS.shielded():
        try:
            report = finalize.write(s, s.plan, journal=journal, error=error, refused=bool(s.refused))
        finally:
            drill_session.end()
    _summarise(report, console, report.get("_lang"))
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
            refusal = _refusal_during(s, run)
            if refusal is not None:
                s.refused = last
                s.note(f"refused by safety in {name}: {last}")
            elif _dry_mode(s) is not None:  # it ran on the recorder's empty answers: what it would call is the point
                s.note(f"dry run: activity {name} did not complete on recorded (empty) answers, not judged: {last}")
            elif s.harness_error is None:
                s.harness_error = f"activity {name} failed: {last}"
                s.note(f"activity {name} failed: {last}")


def _refusal_during(s, run: dict) -> SafetyRefusal | None:
    """The SafetyRefusal the guard raised (and kept in the run context) while this journal activity ran: chaoslib
    keeps an activity's error as text only, so the drill tells a refusal apart by the typed record instead."""
    try:
        start = datetime.fromisoformat(run["start"]).timestamp()
        end = datetime.fromisoformat(run["end"]).timestamp() if run.get("end") else time.time()
    except (KeyError, TypeError, ValueError):
        return None
    return next((e for t, e in s.refusals if start <= t <= end), None)


def _note_steady_state(s, journal: dict | None, dry_run: bool) -> None:
    """A drill whose system was not in steady state did not pass (one that injected nothing: finalize)."""
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


def _summarise(report: dict, console, lang: str | None = None) -> None:
    paths = {k: Path(v) for k, v in report.get("_paths", {}).items()}
    print_summary(report, console, paths=paths, lang=lang)


#: how long `drill run X.feature` waits for the scenario's teardown (rollback + report) after a signal
FEATURE_STOP_TIMEOUT_S = 180.0


def _run_feature(t: Target, report_dir: Path | None, approvals: tuple[str, ...], plan_overrides: str | None,
                 dry_run: bool, console, lang: str = "en") -> int:
    """A .feature file runs through pytest-bdd; its steps write the report; the exit code comes from it and
    from pytest's.

    SIGINT/SIGTERM are forwarded to pytest (own process group: a terminal's Ctrl-C reaches it once, from
    here) and its scenario teardown rolls back and writes the report; we wait for it (bounded), then revert
    whatever this run still has active in the fault ledger, and exit 130.
    """
    state = lab_state()
    FaultLedger(ledger_path(state)).refuse_if_active()
    rid = drill_session.new_run_id("feature")
    rdir = Path(report_dir) if report_dir else Path(os.environ.get("DRILL_REPORTS_DIR", "reports")) / rid
    rdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)  # the caller's pytest options (e.g. -n 2 of a test run) are not the drill's
    env.update({"DRILL_REPORT_DIR": str(rdir.resolve()), "DRILL_RUN_ID": rid, "DRILL_FEATURE": str(t.path),
                "DRILL_APPROVALS": ",".join(approvals), "DRILL_STATE_DIR": str(state), "DRILL_LANG": lang,
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})  # only pytest-bdd and drill's steps (_feature_command)
    if plan_overrides:
        env["DRILL_PLAN_OVERRIDES"] = str(Path(plan_overrides).resolve())
    if dry_run:
        env["DRILL_DRY_RUN"] = "1"
    cmd = _feature_command(rdir.resolve(), rootdir=t.path.parent)
    console.print(f"[bold]drill[/] run [cyan]{rid}[/] (feature {t.path.name}) → {rdir}", highlight=False)
    rc, signals, killed = _run_child(cmd, Path.cwd(), env)
    problems: list[str] = []
    if killed:
        problems.append(f"the scenario did not end within {FEATURE_STOP_TIMEOUT_S:.0f} s of {signals[0]}: killed")
    for entry, err in FaultLedger(ledger_path(state)).revert_all(how="drill run (feature) end", run_id=rid):
        msg = f"reverted leftover fault {entry.fault} on {entry.target}" + (f" (error: {err})" if err else "")
        console.print(f"drill: {msg}", markup=False, highlight=False)
        problems.append(msg)
    report_path = rdir / "report.json"
    if not report_path.exists():
        console.print(f"drill: error: the feature run wrote no report (pytest exit {rc})", markup=False)
        return ExitCode.INTERRUPTED if signals else ExitCode.HARNESS_ERROR
    report = json.loads(report_path.read_text())
    code = int(report["exit_code"])
    if signals:
        code = ExitCode.INTERRUPTED
    elif code == ExitCode.PASSED and (rc != 0 or problems):
        why = "; ".join(problems) or f"pytest exited {rc}: a step or the scenario failed"
        code = _fail_report(report, rdir, why, lang)
    report["_paths"] = {"json": str(report_path), "md": str(rdir / "report.md"), "html": str(rdir / "report.html")}
    _summarise(report, console, lang)
    return code


def _feature_command(rdir: Path, rootdir: Path | None = None) -> list[str]:
    """pytest on the packaged scenario binding with the packaged steps as plugins, from any directory: no pytest
    configuration or conftest of the cwd or a checkout, no other installed pytest plugin (autoload is off). The
    rootdir is the feature's folder (allure-pytest-bdd names the result's path relative to it)."""
    import importlib.util

    from harness.steps import PLUGINS

    binding = importlib.util.find_spec("harness.drill.scenario_binding")
    steps = [f"harness.steps.{name}" for name in PLUGINS]
    cmd = [sys.executable, "-m", "pytest", "-q", "-c", os.devnull, "--rootdir", str(rootdir or rdir), "--noconftest",
           "-p", "no:cacheprovider", "-p", "pytest_bdd.plugin"]
    for name in steps:
        cmd += ["-p", name]
    cmd += _allure_options(rdir)
    return cmd + [str(binding.origin), "--junitxml", str(rdir / "pytest-junit.xml")]


def _allure_options(rdir: Path) -> list[str]:
    """allure-pytest-bdd writes the scenario's Allure result (Given/When/Then steps, tags as labels) into the
    report dir; the drill's files are attached to it by the scenario's teardown (harness.report.allure)."""
    from harness.report.allure import RESULTS_DIR

    return ["-p", "allure_pytest_bdd.plugin", "--alluredir", str(rdir / RESULTS_DIR)]


def _run_child(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, list[str], bool]:
    """Run pytest, forwarding SIGINT/SIGTERM; (return code, signals received, killed after the timeout)."""
    received: list[str] = []
    first: list[tuple[float, int]] = []  # (when, signal) of the one signal forwarded
    child: list[subprocess.Popen] = []

    def forward(signum: int, frame: Any) -> None:  # noqa: ARG001 - flags and a kill(2) only
        received.append(signal.Signals(signum).name)
        if not first:
            first.append((time.monotonic(), signum))
            if child:
                try:
                    child[0].send_signal(signum)
                except ProcessLookupError:
                    pass

    prev = {}
    if threading.current_thread() is threading.main_thread():
        prev = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    killed = False
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, process_group=0)
        child.append(proc)
        if first:  # a signal came while it was being started
            proc.send_signal(first[0][1])
        while True:
            try:
                return proc.wait(timeout=0.2), received, killed
            except subprocess.TimeoutExpired:
                if first and time.monotonic() - first[0][0] > FEATURE_STOP_TIMEOUT_S and not killed:
                    proc.kill()
                    killed = True
    finally:
        for sig, h in prev.items():
            signal.signal(sig, h)


def _fail_report(report: dict, rdir: Path, why: str, lang: str = "en") -> int:
    """The scenario failed although its report said passed: rewrite the report as a harness error (exit 1)."""
    report.update(status="failed", exit_code=ExitCode.HARNESS_ERROR,
                  error=(report.get("error") + "; " if report.get("error") else "") + why)
    report.pop("_paths", None)
    write_report(report, rdir, lang=lang)
    from harness.drill.records import record_history

    record_history(report, rdir)  # the history row says failed too
    return ExitCode.HARNESS_ERROR


# -- profiles that draw catalog scenarios ------------------------------------------------------------
def pick_scenarios(prof: profiles.Profile, cat: catalog.Catalog, only: tuple[str, ...] = ()) -> list[catalog.Scenario]:
    """The scenarios `prof` draws (its cadence tag at its levels, catalog order); `only` (--scenario, repeatable)
    keeps those, each of which must be in the catalog and drawn by the profile (else a usage error)."""
    drawn = catalog_core.draw(cat.scenarios, levels=prof.levels, cadence=prof.cadence_tag)
    ids = [s.id for s in drawn]
    for sid in dict.fromkeys(only):
        sc = cat.get(sid)
        if sc is None:
            raise UsageError(f"--scenario {sid!r} is not in the catalog (`drill catalog` lists them: "
                             f"{', '.join(s.id for s in cat.scenarios)})")
        if sid not in ids:
            raise UsageError(f"--scenario {sid!r} (level {sc.level}, cadences {', '.join(sc.cadences) or 'none'}) is "
                             f"not drawn by {prof.name} (it draws: {', '.join(ids) or 'nothing'})")
    wanted = set(only)
    picked = [s for s in drawn if s.id in wanted] if only else drawn
    if not picked:
        raise UsageError(f"profile {prof.name} draws no scenario (tag {prof.cadence_tag!r} at level(s) "
                         f"{', '.join(map(str, prof.levels))}); see `drill catalog`")
    return picked


#: how long the lab may take after a scenario to settle into its starting shape before the profile stops
SHAPE_GRACE_S = 20.0


def _left_unhealthy(state_dir: str | None, env_name: str | None, report_dir: Path) -> str | None:
    """Why the next scenario must not run on this lab: a fault still active in the ledger, a failed rollback in the
    scenario's journal, or (embedded environments) an unhealthy lab or one not back on its primary region."""
    from harness.config.environment import load_environment

    state = lab_state(state_dir)
    active = FaultLedger(ledger_path(state)).active()
    if active:
        return f"faults still active in the ledger after the scenario: {', '.join(e.fault for e in active)}"
    journal = report_dir / "journal.json"
    if journal.is_file():
        with contextlib.suppress(OSError, ValueError):
            failed = [r.get("activity", {}).get("name") for r in json.loads(journal.read_text()).get("rollbacks") or []
                      if r.get("status") == "failed"]
            if failed:
                return f"rollback failed: {', '.join(str(f) for f in failed)}"
    if not load_environment(env_name).embedded:
        return None
    try:
        topo = Lab(state_dir).status()
    except Exception as e:  # the lab does not answer at all
        return f"the lab does not answer after the scenario: {type(e).__name__}: {e}"
    if not topo.get("healthy"):
        down = [k for k, v in (topo.get("health") or {}).items() if isinstance(v, dict) and not v.get("alive", True)]
        return f"the lab is unhealthy after the scenario{': ' + ', '.join(down) if down else ''}"
    if (topo.get("router") or {}).get("active_region") != "primary":
        return f"the lab is left on region {(topo.get('router') or {}).get('active_region')!r}, not the primary"
    # every role as the next scenario expects to find it (the standbys streaming, apps scaled, proxies clean...);
    # a rollback may still be settling (replicas coming up): a few seconds' grace
    from harness.failover.failback import lab_shape
    from harness.targets import _lab

    shape: dict[str, Any] = {}
    try:
        t = _lab.resolve({"drill_state_dir": str(state)})

        def in_shape() -> bool:
            shape.update(lab_shape(t, "primary"))
            return bool(shape["ok"])

        _lab.wait_for(in_shape, SHAPE_GRACE_S, "the lab in its starting shape", interval=0.5)
    except HarnessError as e:
        if not shape:
            return f"the lab's shape could not be read after the scenario: {e}"
    if not shape.get("ok"):
        return "the lab is not in its starting shape after the scenario: " + \
            ", ".join(k for k, v in shape.items() if not v and k != "ok")
    return None


def run_profile(prof: profiles.Profile, *, only: tuple[str, ...] = (), report_dir: Path | None = None,
                dry_run: bool = False, approvals: tuple[str, ...] = (), plan_overrides: str | None = None,
                state_dir: str | None = None, console=None, environment: str | None = None,
                allow_env: tuple[str, ...] = (), lang: str | None = None, tier: str | None = None) -> int:
    """Run the scenarios `prof` draws one after another on the same lab, each in its own report dir under the
    profile's, then write the profile summary; the exit code is the worst scenario's by severity.

    A failing scenario does not stop the profile (the next one still tells something); the profile stops when a
    scenario was interrupted (Ctrl-C, SIGTERM: the scenario rolls back, the profile exits 130), or left the lab
    unhealthy, a fault active or a rollback failed (the next drill would measure the previous one's damage).
    """
    from rich.markup import escape

    cat = catalog.scan()
    for problem in cat.problems:  # a broken file is not drawn: say so, the rest still runs
        console.print(f"drill: catalog: {problem}", markup=False, highlight=False, soft_wrap=True)
    picked = pick_scenarios(prof, cat, only)
    load_environment(environment)  # a bad --env: exit 2 before anything runs
    check_report_dir(report_dir)
    check_lang(lang)
    NotifyConfig.from_sources({})  # a bad DRILL_NOTIFY_* setting: exit 2 before the first scenario's header
    if len(picked) == 1:  # one scenario is the profile's drill: its report is the run's, at the top (no summary)
        sc = picked[0]
        return run(str(sc.experiment or sc.feature), report_dir=report_dir, dry_run=dry_run, approvals=approvals,
                   plan_overrides=plan_overrides, state_dir=state_dir, console=console, environment=environment,
                   allow_env=allow_env, lang=lang, tier=tier, profile=prof,
                   scenario={"id": sc.id, "level": sc.level, "title": sc.title, "profile": prof.name, "index": 1,
                             "of": 1, "target": str(sc.experiment or sc.feature)})
    run_id = drill_session.new_run_id(prof.name)
    root = Path(report_dir) if report_dir else Path(os.environ.get("DRILL_REPORTS_DIR", "reports")) / run_id
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    stopped: str | None = None
    console.print(f"[bold]drill[/] profile [cyan]{prof.name}[/] ({run_id}): {len(picked)} scenario(s): "
                  f"{escape(', '.join(s.id for s in picked))} → {root}", highlight=False)
    try:
        for i, sc in enumerate(picked, 1):
            console.print(f"[bold]scenario {i}/{len(picked)}[/]: {escape(sc.id)} (level {sc.level}) "
                          f"{escape(sc.title)}", highlight=False)
            sub = root / f"{i:02d}-{sc.id}"
            path = sc.experiment or sc.feature
            info = {"id": sc.id, "level": sc.level, "title": sc.title, "profile": prof.name, "index": i,
                    "of": len(picked), "target": str(path)}
            error = None
            try:
                code = run(str(path), report_dir=sub, dry_run=dry_run, approvals=approvals,
                           plan_overrides=plan_overrides, state_dir=state_dir, console=console, environment=environment, allow_env=allow_env,
                           lang=lang, tier=tier, profile=prof, scenario=info)
            except KeyboardInterrupt:
                code = int(ExitCode.INTERRUPTED)
            except HarnessError as e:  # refused before it began (its file, safety): its row says why
                code, error = int(e.exit_code), str(e)
                console.print(f"drill: scenario {sc.id}: {e}", markup=False, highlight=False, soft_wrap=True)
            report = None
            with contextlib.suppress(OSError, ValueError):
                report = json.loads((sub / "report.json").read_text())
            rows.append(profile_report.scenario_row(info, report, code, sub if report else None, error))
            if code == ExitCode.INTERRUPTED:
                stopped = f"interrupted during scenario {sc.id}"
                break
            if not dry_run and i < len(picked):
                why = _left_unhealthy(state_dir, environment, sub)
                if why:
                    stopped = f"after scenario {sc.id}: {why}"
                    break
    except KeyboardInterrupt:  # between two scenarios (each one handles its own signals and rolls back)
        stopped = "interrupted between scenarios"
    summary = profile_report.build(run_id=run_id, profile=prof.name, title=prof.title, started_at=started,
                                   ended_at=time.time(), rows=rows, drawn=[s.id for s in picked], stopped=stopped,
                                   interrupted=bool(stopped and stopped.startswith("interrupted")))
    paths = profile_report.write(summary, root)
    profile_report.print_table(summary, console, paths)
    return int(summary["exit_code"])
