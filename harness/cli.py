"""The `drill` command line: lab management, drills, calibration, detection, recovery, validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from harness.errors import ExitCode, HarnessError, LabError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="drill: chaos-engineering and disaster-recovery drills with measured RTO/RPO.\n\n"
         "Exit codes: 0 passed, 1 harness error, 2 usage, 3 objectives missed, 4 integrity violation, "
         "5 refused by safety, 130 interrupted.",
)
lab_app = typer.Typer(no_args_is_help=True, help="The embedded two-region lab (PostgreSQL, Valkey, S3, app, router, "
                                                 "fault proxy) on loopback.")
app.add_typer(lab_app, name="lab")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

StateDir = typer.Option(None, "--state-dir", envvar="DRILL_STATE_DIR",
                        help="Lab state directory (default ./.drill/lab).")
EnvName = typer.Option("lab", "--env", envvar="DRILL_ENV", metavar="NAME|FILE",
                       help="The environment (environments/NAME.yaml or a file; default lab). See docs/ENVIRONMENTS.md.")


def _lab_environment(name: str, command: str):
    """--env of a command that drives the embedded lab: a valid environment of kind lab or lab-cloud."""
    from harness.config.environment import load_environment

    env = load_environment(name)
    if not env.embedded:
        raise UsageError(f"--env {name!r} is of kind {env.kind}: `drill {command}` drives the embedded lab "
                         f"only (environments of kind lab or lab-cloud)")
    return env


def _error_line(e: BaseException) -> None:
    """One line on stderr, never wrapped to the terminal width (scripts and tests parse it)."""
    msg = " ".join(str(e).split()) or type(e).__name__
    sys.stderr.write(f"drill: error: {msg}\n")
    sys.stderr.flush()


def _fail(e: HarnessError) -> None:
    _error_line(e)
    raise typer.Exit(e.exit_code)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@lab_app.command("up")
def lab_up(
    json_out: bool = typer.Option(False, "--json", help="Print the topology as JSON."),
    scale: int = typer.Option(1, "--scale", min=1, max=1000, help="Size knob of the seed data (1 = ~600 vouchers)."),
    base_port: Optional[int] = typer.Option(None, "--base-port",
                                            help="Use consecutive ports from here instead of free ones."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Start the embedded lab (idempotent: a running lab is reported, not restarted)."""
    try:
        _lab_environment(env, "lab up")
    except HarnessError as e:
        _fail(e)
    from harness.lab.manager import Lab

    lab = Lab(state_dir)
    try:
        progress = lambda m: err.print(f"[dim]lab:[/] {m}")
        topo = lab.up(scale=scale, base_port=base_port, progress=progress)
        topo = lab.status()
    except HarnessError as e:
        _fail(e)
    except Exception as e:  # an unexpected failure of a server or client: one line, the logs have the rest
        _fail(LabError(f"lab up failed: {type(e).__name__}: {e}; logs: {lab.logs}"))
    if json_out:
        _print_json(topo)
    else:
        _print_topology(topo)


@lab_app.command("status")
def lab_status(
    json_out: bool = typer.Option(False, "--json", help="Print topology and health as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Topology plus the health of every component. Exit 1 when no lab runs or it is unhealthy."""
    try:
        _lab_environment(env, "lab status")
    except HarnessError as e:
        _fail(e)
    from harness.lab.manager import Lab

    try:
        topo = Lab(state_dir).status()
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(topo)
    else:
        _print_topology(topo)
    if not topo["healthy"]:
        raise typer.Exit(ExitCode.HARNESS_ERROR)


@lab_app.command("down")
def lab_down(state_dir: Optional[Path] = StateDir, env: str = EnvName) -> None:
    """Stop every lab process and remove its data (logs are kept)."""
    try:
        _lab_environment(env, "lab down")
    except HarnessError as e:
        _fail(e)
    from harness.lab.manager import Lab

    try:
        stopped = Lab(state_dir).down(progress=lambda m: err.print(f"[dim]lab:[/] {m}"))
    except HarnessError as e:
        _fail(e)
    except Exception as e:
        _fail(LabError(f"lab down failed: {type(e).__name__}: {e}"))
    out.print("lab stopped" if stopped else "no lab was running")


@app.command("run")
def run_cmd(
    target: str = typer.Argument(..., help="An experiment file (.json), a feature file (.feature), or a profile: "
                                           "ci-smoke, monthly-chaos, semiannual-simulation, annual-full-dr, "
                                           "tabletop."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where to write the report "
                                                                         "(default reports/<run-id>/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Record the planned faults, inject nothing."),
    approve: list[str] = typer.Option([], "--approve", metavar="GATE[=WHO]",
                                      help="Approve a gate of the plan (repeatable): dr_region_switch, "
                                           "data_restore_from_backup, database_point_in_time_recovery; =WHO "
                                           "names the approver (recorded with the time in the timeline and "
                                           "report)."),
    plan_overrides: Optional[Path] = typer.Option(None, "--plan-overrides",
                                                  help="YAML merged over the plan (e.g. tighter objectives)."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
    allow_env: list[str] = typer.Option([], "--allow-env", metavar="NAME",
                                        help="Allow faults in this non-lab environment (repeatable; also "
                                             "DRILL_ALLOWED_ENVIRONMENTS); its file must allow them too."),
    lang: str = typer.Option("en", "--lang", envvar="DRILL_LANG", metavar="en|ko",
                             help="Language of report.md, report.html, the console summary and the notifications "
                                  "(en or ko; report.json is the same in both)."),
    tier: Optional[str] = typer.Option(None, "--tier", metavar="platinum|gold|silver",
                                       help="Judge every service also against this customer tier's RTO/RPO "
                                            "(platinum 1h/15m, gold 4h/1h, silver 8h/4h)."),
    scenario: list[str] = typer.Option([], "--scenario", metavar="ID",
                                       help="Run only this scenario of the profile (repeatable; `drill catalog` "
                                            "lists them)."),
) -> None:
    """Run a drill: bring the lab up if needed, inject, fail over, measure RTO/RPO, validate, report.

    A profile (ci-smoke, monthly-chaos, semiannual-simulation, annual-full-dr) draws its scenarios from the catalog
    by tag and runs them one after another on the same lab, each in its own report dir, then writes the profile
    summary; it continues after a failed scenario but stops when one leaves the lab unhealthy, a fault active or a
    rollback failed, and on Ctrl-C (exit 130). Its exit code is the worst scenario's (docs/CATALOG.md).

    Exit code: 0 passed, 3 objectives missed, 4 integrity violation, 5 refused by safety, 130 interrupted.
    """
    from harness.drill import runner
    from harness.report.i18n import check_lang

    try:
        lang = check_lang(lang)
    except HarnessError as e:
        _fail(e)
    if plan_overrides is not None and not plan_overrides.is_file():
        _fail(UsageError(f"--plan-overrides {str(plan_overrides)!r} "
                         + ("is not a file" if plan_overrides.exists() else "does not exist")))
    try:
        code = runner.run(target, report_dir=report_dir, dry_run=dry_run, approvals=tuple(approve),
                          plan_overrides=str(plan_overrides) if plan_overrides else None,
                          state_dir=str(state_dir) if state_dir else None, console=err,
                          environment=env, allow_env=tuple(allow_env), lang=lang, tier=tier,
                          scenarios=tuple(scenario))
    except HarnessError as e:
        _fail(e)
    raise typer.Exit(code)


@app.command("catalog")
def catalog_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the catalog as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the catalog page (docs/CATALOG.md)."),
    profile: Optional[str] = typer.Option(None, "--profile", metavar="NAME",
                                          help="Only the scenarios this profile draws."),
) -> None:
    """The disaster catalog: every scenario's level, cadences, fault, expected behaviour and objective, read from the
    shipped experiments and features by their tags (docs/CATALOG.md).

    Exit code: 0, 2 a file breaks the catalog's tag rules (each named on stderr) or an unknown --profile.
    """
    from harness.core import catalog as catalog_core
    from harness.drill import catalog, profiles

    if json_out and markdown:
        _fail(UsageError("--json and --markdown exclude each other"))
    try:
        cat = catalog.scan()
        shown = list(cat.scenarios)
        if profile is not None:
            prof = profiles.get(profile)
            if prof is None:
                raise UsageError(f"--profile {profile!r} is not a profile ({', '.join(profiles.PROFILES)})")
            if prof.draws:
                shown = catalog_core.draw(cat.scenarios, levels=prof.levels, cadence=prof.cadence_tag)
    except HarnessError as e:
        _fail(e)
    if json_out:
        doc = cat.to_dict()
        doc["scenarios"] = [s.to_dict() for s in shown]
        _print_json(doc)
    elif markdown:
        sys.stdout.write(catalog.render_markdown(cat))
    else:
        from rich.table import Table

        t = Table(title=f"disaster catalog: {len(shown)} scenario(s)", title_justify="left", show_lines=True)
        t.add_column("scenario", no_wrap=True)  # the id is what `--scenario` takes: never cut
        for col in ("level", "cadences", "fault", "expected behaviour", "objective"):
            t.add_column(col)
        for row in catalog.rows(catalog.Catalog(tuple(shown), cat.others, cat.problems)):
            t.add_row(*row)
        out.print(t)
    for p in cat.problems:
        _error_line(UsageError(f"catalog: {p}"))
    raise typer.Exit(ExitCode.USAGE if cat.problems else ExitCode.PASSED)


def _parse_int(option: str, value: str) -> int:
    try:
        return int(value, 10)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{option} {value!r} is not an integer") from e


@app.command("calibrate")
def calibrate_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    k: list[str] = typer.Option([], "--k", metavar="K", help="Acknowledged writes to lose on purpose (repeatable; "
                                                              "default 0, 1 and 37)."),
    delay_ms: str = typer.Option("200", "--delay-ms", metavar="MS", help="Latency injected on the Popbill link "
                                                                         "(1..1500, default 200)."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where to keep calibration.json and the "
                                                                         "timeline (default reports/<run-id>/)."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Self-test of the meters against known, injected loss, delay and integrity faults.

    K lost writes (cut replication, kill the primary, fail over) must measure exactly K lost, right RPO.

    A known latency on the Popbill link must measure within 20 %; every planted integrity fault must be named.

    Brings the lab up if needed; every fault is rolled back, also on Ctrl-C and SIGTERM.

    Exit code: 0 every meter within tolerance, 1 otherwise, 2 bad input, 130 interrupted.
    """
    try:
        _lab_environment(env, "calibrate")
    except HarnessError as e:
        _fail(e)
    from harness.drill import calibrate, runner

    def progress(m: str) -> None:
        err.print(f"[dim]calibrate:[/] {m}", highlight=False, soft_wrap=True)

    try:
        ks, delay = calibrate.check_inputs(
            tuple(_parse_int("--k", v) for v in k) or calibrate.DEFAULT_KS, _parse_int("--delay-ms", delay_ms))
        runner.check_report_dir(report_dir)
        runner.ensure_lab(err, str(state_dir) if state_dir else None)
        result = calibrate.calibrate(state_dir, ks=ks, delay_ms=delay, report_dir=report_dir,
                                     progress=progress)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(result)
    else:
        _print_calibration(result)
    raise typer.Exit(ExitCode.PASSED if result["passed"] else ExitCode.HARNESS_ERROR)


def _print_calibration(r: dict) -> None:
    def mark(ok: bool) -> str:
        return "[green]ok[/]" if ok else "[red]FAIL[/]"

    for x in r["loss"]:
        if x.get("error"):
            out.print(f"known loss K={x['k']}: {mark(False)} {x['error']}")
            continue
        out.print(f"known loss K={x['k']}: lost {x['lost_measured']} (expected {x['lost_expected']}), "
                  f"RPO {x['rpo_measured_s']:.3f} s (expected {x['rpo_expected_s']:.3f} s) {mark(x['ok'])}")
    d = r.get("delay") or {}
    if d.get("measured_ms") is not None:
        out.print(f"known delay {d['injected_ms']} ms: measured {d['measured_ms']:.1f} ms "
                  f"(baseline {d['baseline_ms']:.1f} ms, with toxic {d['with_toxic_ms']:.1f} ms), "
                  f"error {d['error_pct']:.1f} % {mark(d['ok'])}")
    else:
        out.print(f"known delay: {mark(False)} {d.get('error', 'not measured')}")
    for x in r["integrity"]:
        out.print(f"planted {x['fault']}: {x.get('check')} reported {', '.join(x['reported']) or 'nothing'} "
                  f"(planted {x.get('planted')}) {mark(x['ok'])}")
    out.print(f"calibration {'[green]passed[/]' if r['passed'] else '[red]failed[/]'} in {r['duration_s']:.1f} s; "
              f"details in {r['report_dir']}/calibration.json")


@app.command("recover")
def recover_cmd(state_dir: Optional[Path] = StateDir, env: str = EnvName) -> None:
    """Revert every fault still recorded as active in the fault ledger (after a crash or a kill -9)."""
    try:
        _lab_environment(env, "recover")
    except HarnessError as e:
        _fail(e)
    from harness.safety.fault_ledger import FaultLedger, ledger_path
    from harness.lab.paths import state_dir as resolve_state

    ledger = FaultLedger(ledger_path(resolve_state(state_dir)))
    active = ledger.active()
    if not active:
        out.print("no active fault in the ledger; nothing to revert")
        return
    failed = 0
    for entry, error in ledger.revert_all():
        if error:
            failed += 1
            err.print(f"[red]could not revert[/] {entry.fault} on {entry.target} ({entry.id}): {error}",
                      markup=True, highlight=False)
        else:
            out.print(f"reverted {entry.fault} on {entry.target} ({entry.id})")
    if failed:
        raise typer.Exit(ExitCode.HARNESS_ERROR)


def _print_topology(topo: dict) -> None:
    from rich.table import Table

    t = Table(title=f"drill lab ({topo['state_dir']})", show_lines=False)
    t.add_column("component")
    t.add_column("where")
    t.add_column("health")
    health = topo.get("health", {})

    def h(key: str) -> str:
        v = health.get(key)
        if not v:
            return ""
        if not v.get("alive"):
            return "[red]down[/]"
        role = v.get("role")
        return f"[green]up[/]{' (' + role + ')' if role else ''}"

    for region in ("primary", "dr"):
        r = topo["regions"][region]
        t.add_row(f"postgres {region} ({r['postgres'].get('zone', '?')})", r["postgres"]["dsn"], h(f"postgres_{region}"))
        if r.get("postgres_standby"):
            sb = r["postgres_standby"]
            t.add_row(f"postgres {region} in-region standby ({sb['zone']})", sb["dsn"], h(f"postgres_{sb['node']}"))
        t.add_row(f"valkey {region}", r["redis"]["url"], h(f"redis_{region}"))
        t.add_row(f"app {region}", ", ".join(r["app"]["urls"]) or "(0 replicas)", "")
    t.add_row("router (global endpoint)", topo["router"]["url"], f"active region: {topo['router']['active_region']}")
    t.add_row("fault proxy", topo["toxiproxy"]["url"], h("toxiproxy"))
    t.add_row("s3 / aws (moto)", topo["s3"]["endpoint_url"], h("moto"))
    if topo.get("status_page"):
        t.add_row("status page", topo["status_page"]["url"], h("status_page"))
    kube = topo.get("kubernetes")
    if kube:
        for region, url in kube.get("api_urls", {}).items():
            t.add_row(f"kubernetes {region}", url, h(f"kubernetes_{region}"))
    out.print(t)
    if kube:
        out.print(f"kubeconfig: {kube['kubeconfig']} (contexts {', '.join(kube['contexts'].values())})",
                  highlight=False, markup=False)
    verdict = "[green]healthy[/]" if topo.get("healthy") else "[red]unhealthy[/]"
    out.print(f"lab is {verdict}; logs in {topo['logs']}")


# --- validate ------------------------------------------------------------------------------------
@app.command("validate")
def validate_cmd(
    paths: list[Path] = typer.Argument(..., metavar="PATH",
                                       help="Experiments (.json, or .yaml with a method), features (.feature), "
                                            "plan files or plan overrides (.yaml/.yml), environment files "
                                            "(environments/*.yaml)."),
    steps_dir: Optional[Path] = typer.Option(None, "--steps-dir", help="The `steps` package the features' steps must "
                                                                       "match (default: the nearest steps/ above each "
                                                                       "feature, else ./steps, else drill's own)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Validate experiments, features and config files; one line per file: `ok  PATH (...)` or `invalid PATH: why`.

    Experiments: chaoslib loads and validates them; every python provider must be importable (harness functions exported in their module's __all__).

    Features: Gherkin syntax (errors with their line) and every step must match a step definition of the steps package.

    Plan files: the full plan schema; plan overrides are merged over the packaged plan and validated.

    Environment files: the schema of their kind, the plan's regions and catalog services (docs/ENVIRONMENTS.md).

    Exit code: 0 every file valid, 2 any file invalid or missing.
    """
    from harness.drill.validate import validate_paths

    if steps_dir is not None and not (steps_dir / "__init__.py").is_file():
        _fail(UsageError(f"--steps-dir {str(steps_dir)!r} is not a Python package (no __init__.py)"))
    results = validate_paths(paths, steps_dir=steps_dir)
    if json_out:
        _print_json({"ok": all(r.ok for r in results), "files": [r.to_dict() for r in results]})
    else:
        for r in results:
            sys.stdout.write(r.line() + "\n")
    raise typer.Exit(ExitCode.PASSED if all(r.ok for r in results) else ExitCode.USAGE)


# --- detect --------------------------------------------------------------------------------------
@app.command("detect")
def detect_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the level and the indicators as JSON."),
    prometheus: bool = typer.Option(False, "--prometheus", help="Print the level and one gauge per indicator in "
                                                                "the Prometheus text format (kerp_disaster_level)."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Current disaster level (0 normal .. 4 catastrophic) and the health indicators behind it.

    Each of the plan's indicators is checked against the lab; the weights of the failed ones add up to the level.

    Exit code: 0 whenever detection ran (the level is information, not a verdict), 1 harness error (no lab).
    """
    try:
        _lab_environment(env, "detect")
    except HarnessError as e:
        _fail(e)
    from harness.safety import guard
    from harness.failover.runbook import detect_level

    cfg = {"drill_state_dir": str(state_dir)} if state_dir else {}
    if json_out and prometheus:
        _fail(UsageError("--json and --prometheus exclude each other"))
    if prometheus:
        import sys

        from harness.drill import detector as drill_detector
        from harness.lab.metrics import render

        try:
            smp = drill_detector.measure(cfg)
        except HarnessError as e:
            _fail(e)
        except Exception as e:  # a client failing outside the per-indicator checks: one line
            _fail(LabError(f"detection failed: {type(e).__name__}: {e}"))
        drill_detector.push(cfg, smp)  # the lab's metrics endpoint serves the same sample
        sys.stdout.write(render(smp.to_dict()).decode())
        return
    try:
        res = detect_level(configuration=cfg)
        weights = {i.name: i.weight for i in guard.plan(cfg).indicators}
    except HarnessError as e:
        _fail(e)
    except Exception as e:  # a client failing outside the per-indicator checks: one line
        _fail(LabError(f"detection failed: {type(e).__name__}: {e}"))
    for name, ind in res["indicators"].items():
        ind["weight"] = weights.get(name)
    if json_out:
        _print_json(res)
        return
    from rich.table import Table

    t = Table(title="health indicators")
    t.add_column("indicator")
    t.add_column("weight", justify="right")
    t.add_column("state")
    t.add_column("detail")
    for name, ind in res["indicators"].items():
        state = {True: "[green]healthy[/]", False: "[red]failed[/]"}.get(ind["healthy"], "[yellow]unknown[/]")
        t.add_row(name, "" if ind["weight"] is None else str(ind["weight"]), state, ind["detail"])
    out.print(t)
    colour = "green" if res["level"] == 0 else "yellow" if res["level"] <= 2 else "red"
    out.print(f"disaster level [{colour}]{res['level']} ({res['name']})[/]: failed weight {res['failed_weight']}"
              + (f"; response: {res['response']}" if res.get("response") and res["level"] else ""))


# --- backup --------------------------------------------------------------------------------------
backup_app = typer.Typer(no_args_is_help=True, help="Backup and restore drills on the lab: pg_dump to S3 (SSE-KMS) "
                                                    "with metadata in DynamoDB; verify; restore into a new database.")
app.add_typer(backup_app, name="backup")


def _backup_target(state_dir: Optional[Path]) -> tuple:
    """(lab, topology, s3 endpoint, bucket) of the running lab; LabError (exit 1) when none runs."""
    from harness.lab.manager import Lab

    lab = Lab(state_dir)
    topo = lab.topology()
    return lab, topo, topo["s3"]["endpoint_url"], topo["s3"].get("bucket", "kerp-backups")


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


@backup_app.command("create")
def backup_create(
    layer: str = typer.Option("snapshot.postgresql_dump", "--layer", metavar="LAYER.COMPONENT",
                              help="A backup layer of the plan (see `drill backup list`): snapshot.postgresql_dump "
                                   "(pg_dump), snapshot.postgresql (base backup), snapshot.redis, archive.database."),
    json_out: bool = typer.Option(False, "--json", help="Print the backup as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Take a backup of one of the plan's layers into S3 (SSE-KMS, sha256 in the metadata), record it in DynamoDB, then apply that layer's retention.

    Exit code: 0 taken, 2 unknown layer, 1 harness error.
    """
    try:
        _lab_environment(env, "backup create")
    except HarnessError as e:
        _fail(e)
    from harness.backup import catalog

    try:
        lab, topo, endpoint, bucket = _backup_target(state_dir)
        res = catalog.take(lab, topo, layer, endpoint_url=endpoint, bucket=bucket)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(res)
    else:
        out.print(f"backup s3://{bucket}/{res['key']} ({res['layer']})\n  size   {res['size']} bytes\n"
                  f"  sha256 {res['sha256']}\n  retention deleted {len(res['retention']['deleted'])}, kept "
                  f"{res['retention']['kept']}", soft_wrap=True)


@backup_app.command("list")
def backup_list(
    layer: Optional[str] = typer.Option(None, "--layer", metavar="LAYER.COMPONENT",
                                        help="Only this layer of the plan (default: every layer but the WAL archive)."),
    json_out: bool = typer.Option(False, "--json", help="Print the backups as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """The backups in the lab's bucket, newest first, with their layer, age, size and last verification.

    Exit code: 0, 2 unknown layer, 1 harness error.
    """
    try:
        _lab_environment(env, "backup list")
    except HarnessError as e:
        _fail(e)
    from harness.backup import catalog

    try:
        _, _, endpoint, bucket = _backup_target(state_dir)
        items = catalog.listing(layer, endpoint_url=endpoint, bucket=bucket)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json([b.to_dict() for b in items])
        return
    if not items:
        out.print(f"no backup in s3://{bucket}" + (f" for layer {layer}" if layer else ""))
        return
    for b in items:
        verified = {True: "verified", False: "FAILED verification", None: "not verified"}[b.verified]
        sys.stdout.write(f"{b.key}  {b.layer}  {b.size:>10} bytes  {_age(b.age_s):>9} ago  {verified}\n")


@backup_app.command("prune")
def backup_prune(
    layer: Optional[str] = typer.Option(None, "--layer", metavar="LAYER.COMPONENT", help="Only this layer."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print what was deleted and kept as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Apply the plan's retention: delete the backups older than their layer keeps (never the newest, never one inside the retention; WAL the oldest kept base backup needs stays).

    Exit code: 0, 2 unknown layer, 1 harness error.
    """
    try:
        _lab_environment(env, "backup prune")
    except HarnessError as e:
        _fail(e)
    from harness.backup import catalog

    try:
        _, _, endpoint, bucket = _backup_target(state_dir)
        results = catalog.prune_all(layer, endpoint_url=endpoint, bucket=bucket, dry_run=dry_run)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(results)
        return
    for r in results:
        out.print(f"{r['layer']}: {'would delete' if dry_run else 'deleted'} {len(r['deleted'])}, kept {r['kept']}",
                  soft_wrap=True, highlight=False)


@backup_app.command("verify")
def backup_verify(
    key: str = typer.Argument(..., help="The backup's S3 key (see `drill backup list`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Download a backup and check it: sha256 vs. object metadata and DynamoDB record, pg_restore --list.

    Nothing is restored; the archive is only listed.

    Exit code: 0 intact, 4 integrity violation (the reason is printed), 2 no such key, 1 harness error.
    """
    try:
        _lab_environment(env, "backup verify")
    except HarnessError as e:
        _fail(e)
    from harness import backup

    try:
        lab, _, endpoint, bucket = _backup_target(state_dir)
        res = backup.verify(key, pg_runtime=lab.pg_runtime(), endpoint_url=endpoint, bucket=bucket)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(res.to_dict())
    else:
        _print_checks(res.checks)
        if res.ok:
            out.print(f"backup {key} verified ({res.size} bytes, sha256 {res.sha256})", soft_wrap=True)
    if not res.ok:
        _error_line(HarnessError(f"backup {key} failed verification: {res.reason}"))
        raise typer.Exit(ExitCode.INTEGRITY_VIOLATION)


def _print_checks(checks) -> None:
    for name, ok, detail in checks:
        out.print(f"{'[green]ok[/]  ' if ok else '[red]FAIL[/]'} {name}: {detail}", markup=True, highlight=False,
                  soft_wrap=True)


@backup_app.command("restore")
def backup_restore(
    key: str = typer.Argument(..., help="The backup's S3 key (see `drill backup list`)."),
    into: str = typer.Option(..., "--into", metavar="DBNAME", help="A NEW database on the current primary; refused "
                                                                   "when it exists (nothing is dropped or overwritten)."),
    approve: list[str] = typer.Option([], "--approve", help="Approve a gate of the plan (repeatable); a restore "
                                                            "needs data_restore_from_backup."),
    json_out: bool = typer.Option(False, "--json", help="Print the verification and integrity results as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Restore a backup into a NEW database on the current primary and run the integrity checks on it.

    Needs the plan's gate data_restore_from_backup (--approve data_restore_from_backup).

    The backup is verified first; then CREATE DATABASE DBNAME and pg_restore --no-owner into it. An existing DBNAME is refused: nothing is ever dropped or overwritten.

    This command never touches the live kerp database and switches nothing: no traffic, application or DSN is pointed at the restored copy.

    Exit code: 0 restored and every integrity check passes, 4 verification or an integrity check failed, 5 not approved, 2 DBNAME exists or is invalid or no such key, 1 harness error.
    """
    try:
        _lab_environment(env, "backup restore")
    except HarnessError as e:
        _fail(e)
    from harness import backup
    from harness.workload import find_primary_dsn

    try:
        backup.check_database_name(into)  # the input first: a bad name needs no lab to be refused (exit 2)
        lab, topo, endpoint, bucket = _backup_target(state_dir)
        cfg = {"drill_state_dir": str(lab.state), "drill_approvals": list(approve)}
        # the gate before anything is read or created
        from harness.safety import guard

        guard.approve(backup.RESTORE_GATE, "restore_from_backup", cfg)
        res = backup.restore(key, into, dsn=find_primary_dsn(topo), pg_runtime=lab.pg_runtime(),
                             endpoint_url=endpoint, bucket=bucket, configuration=cfg)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(res.to_dict())
    else:
        _print_checks(res.verification.checks)
        for c in res.integrity:
            mark = {"pass": "[green]ok[/]  ", "warning": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}[c.status]
            out.print(f"{mark} {c.check}: {c.details}", markup=True, highlight=False, soft_wrap=True)
    if not res.verification.ok:
        _error_line(HarnessError(f"backup {key} failed verification, nothing restored: {res.verification.reason}"))
        raise typer.Exit(ExitCode.INTEGRITY_VIOLATION)
    failed = [c.check for c in res.integrity if c.status == "fail"]
    if failed:
        _error_line(HarnessError(f"restored {key} into database {into!r}, integrity checks failed: "
                                 f"{', '.join(failed)}"))
        raise typer.Exit(ExitCode.INTEGRITY_VIOLATION)
    if not json_out:
        out.print(f"restored {key} into database {into!r} in {res.seconds:.1f} s; integrity checks pass "
                  f"(the live kerp database was not touched; drop {into!r} when done)", soft_wrap=True)


@backup_app.command("pitr")
def backup_pitr(
    to: str = typer.Option(..., "--to", metavar="ISO-8601", help="The recovery target time, with a UTC offset "
                                                                  "(e.g. 2026-12-06T20:41:07.25Z)."),
    into: str = typer.Option(..., "--into", metavar="NAME", help="Name of the NEW server (refused when taken)."),
    approve: list[str] = typer.Option([], "--approve", help="Approve a gate of the plan (repeatable); a point-in-time "
                                                            "recovery needs database_point_in_time_recovery."),
    json_out: bool = typer.Option(False, "--json", help="Print the recovered server and its checks as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Point-in-time recovery into a NEW PostgreSQL server: the newest base backup finished before --to plus the archived WAL, then the integrity checks there.

    Needs the plan's gate database_point_in_time_recovery. The live cluster is not stopped or written: it is only asked to close its current WAL segment so the target is archived. The new server runs on a free port until `drill backup discard NAME` or `drill lab down`.

    Exit code: 0 recovered and every integrity check passes, 4 an integrity check failed or the archive does not match its checksums, 5 not approved, 2 bad --to (no offset, in the future, before the first base backup) or NAME taken or invalid, 1 harness error.
    """
    try:
        _lab_environment(env, "backup pitr")
    except HarnessError as e:
        _fail(e)
    from harness.backup import pitr
    from harness.lab.manager import Lab
    from harness.workload import find_primary_dsn

    try:
        target = pitr.parse_target(to)
        pitr.check_server_name(into)
        lab = Lab(state_dir)
        topo = lab.topology()
        cfg = {"drill_state_dir": str(lab.state), "drill_approvals": list(approve)}
        try:
            primary = find_primary_dsn(topo)
        except HarnessError:
            primary = None  # a lost primary region: recover from what is archived
        res = pitr.point_in_time_recovery(lab, target, into, primary_dsn=primary, configuration=cfg)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(res.to_dict())
    else:
        for c in res.integrity:
            mark = {"pass": "[green]ok[/]  ", "warning": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}[c.status]
            out.print(f"{mark} {c.check}: {c.details}", markup=True, highlight=False, soft_wrap=True)
        out.print(f"recovered {into!r} to {res.recovered_to.isoformat() if res.recovered_to else 'the base backup'} "
                  f"(requested {res.requested.isoformat()}) from {res.base_backup['key']} and {res.wal_segments} WAL "
                  f"segment(s) in {res.seconds:.1f} s\n  dsn {res.dsn}\n  stop it with `drill backup discard {into}`",
                  soft_wrap=True, highlight=False)
    failed = [c.check for c in res.integrity if c.status == "fail"]
    if failed:
        _error_line(HarnessError(f"recovered server {into!r}: integrity checks failed: {', '.join(failed)}"))
        raise typer.Exit(ExitCode.INTEGRITY_VIOLATION)


@backup_app.command("restore-redis")
def backup_restore_redis(
    key: str = typer.Argument(..., help="A Redis snapshot's S3 key (`drill backup list --layer snapshot.redis`)."),
    into: str = typer.Option(..., "--into", metavar="NAME", help="Name of the NEW Valkey server (refused when taken)."),
    approve: list[str] = typer.Option([], "--approve", help="Approve a gate (needs data_restore_from_backup)."),
    json_out: bool = typer.Option(False, "--json", help="Print the restored server and its counts as JSON."),
    state_dir: Optional[Path] = StateDir,
    env: str = EnvName,
) -> None:
    """Start a NEW Valkey on a free port from a Redis snapshot (sha256 checked first) and count its keys and sessions.

    Exit code: 0 restored, 4 the snapshot does not match its sha256, 5 not approved, 2 no such key or NAME taken, 1 harness error. Stop it with `drill backup discard NAME`.
    """
    try:
        _lab_environment(env, "backup restore-redis")
    except HarnessError as e:
        _fail(e)
    from harness.backup import redis_snapshot
    from harness.lab.manager import Lab

    try:
        lab = Lab(state_dir)
        cfg = {"drill_state_dir": str(lab.state), "drill_approvals": list(approve)}
        res = redis_snapshot.restore(lab, key, into, configuration=cfg)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json(res)
    else:
        out.print(f"restored {key} into Valkey {into!r} at {res['url']}: {res['keys']} keys, {res['sessions']} "
                  f"sessions; stop it with `drill backup discard {into}`", soft_wrap=True, highlight=False)


@backup_app.command("discard")
def backup_discard(
    name: str = typer.Argument(..., help="A server `drill backup pitr` (or a Redis restore) brought up."),
    state_dir: Optional[Path] = StateDir,
) -> None:
    """Stop a recovered server and delete its data. Exit code: 0 stopped, 2 no such server, 1 harness error."""
    from harness.backup import pitr
    from harness.lab.manager import Lab

    try:
        if not pitr.discard(Lab(state_dir), name):
            raise UsageError(f"no recovered server named {name!r}")
    except HarnessError as e:
        _fail(e)
    out.print(f"recovered server {name!r} stopped and removed")
# --- run history, trend, cadence, Allure (harness/report/history.py, trend.py, cadence.py, allure_html.py) ---------
ReportsDir = typer.Option(Path("reports"), "--reports-dir", envvar="DRILL_REPORTS_DIR",
                          help="The reports root (run dirs, history.sqlite; default ./reports).")
report_app = typer.Typer(no_args_is_help=True, help="Reports across runs: the Allure HTML report.")
app.add_typer(report_app, name="report")


def _history_runs(reports_dir: Path):
    import os

    from harness.report import history

    return history.runs(Path(os.environ["DRILL_HISTORY"]) if os.environ.get("DRILL_HISTORY")
                        else reports_dir / history.STORE_NAME)


@app.command("history")
def history_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many runs (newest first)."),
    reports_dir: Path = ReportsDir,
) -> None:
    """Recorded runs, newest first: run id, kind, environment, status, exit code, start, duration, RTO/RPO per
    service (from reports/history.sqlite, written by every drill)."""
    try:
        runs = _history_runs(reports_dir)[:limit]
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json([r.to_dict() for r in runs])
        return
    from harness.core.durations import format_duration

    fmt = lambda v: "-" if v is None else format_duration(v)  # noqa: E731
    for r in runs:
        objs = ", ".join(f"{o.service} {fmt(o.rto_s)}/{fmt(o.rpo_s)}" for o in r.objectives)
        out.print(f"{r.run_id}  {r.kind:<22} {r.environment:<8} {r.status:<7} exit {r.exit_code:<3} {r.started_at}  "
                  f"{fmt(r.duration_s):>6}  {'dry run' if r.dry_run else 'RTO/RPO: ' + (objs or '-')}",
                  markup=False, soft_wrap=True)


@app.command("trend")
def trend_cmd(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The HTML page (default REPORTS/trend.html)."),
    json_out: bool = typer.Option(False, "--json", help="Print p50/p95 per scenario and the regressions as JSON."),
    reports_dir: Path = ReportsDir,
) -> None:
    """HTML page of RTO and RPO per service over the recorded runs, p50/p95 per scenario, and a regression flag for
    a run worse than the recent p95 of its scenario. Exit 0 (a regression is shown, not an error)."""
    from harness.report import trend

    try:
        runs = _history_runs(reports_dir)
        page = output or reports_dir / "trend.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(trend.render_trend_html(runs), encoding="utf-8")
    except HarnessError as e:
        _fail(e)
    except OSError as e:
        _fail(UsageError(f"--output {str(output or page)!r} cannot be written: {e.strerror or e}"))
    data = trend.trend_data(runs)
    if json_out:
        _print_json({**data, "page": str(page)})
        return
    for g in data["regressions"]:
        out.print(f"REGRESSION {g['run_id']} ({g['kind']}) {g['service']} {g['metric']} {g['value_s']} s > recent "
                  f"p95 {g['recent_p95_s']} s", markup=False, soft_wrap=True)
    out.print(f"trend of {data['runs']} runs: {page}", markup=False, soft_wrap=True)


@app.command("cadence")
def cadence_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the status of every test type as JSON."),
    reports_dir: Path = ReportsDir,
) -> None:
    """The last run of each of the plan's test types (tabletop, simulation, full, chaos) and which are overdue per
    the plan's cadence. Exit 0 whatever is overdue (the list says it)."""
    from harness.config import load_plan
    from harness.report import cadence, history

    try:
        plan = load_plan()
        try:
            runs = _history_runs(reports_dir)
        except history.HistoryError:
            if (reports_dir / history.STORE_NAME).exists():
                raise
            runs = []  # nothing recorded yet: every test type is overdue
        rows = cadence.cadence(plan.test_types, runs)
    except HarnessError as e:
        _fail(e)
    if json_out:
        _print_json([c.to_dict() for c in rows])
        return
    for c in rows:
        out.print(c.line(), markup=False, soft_wrap=True)


@report_app.command("allure")
def report_allure_cmd(
    runs: Optional[list[str]] = typer.Argument(None, metavar="[RUNS_OR_DIRS]...",
                                               help="Run ids under the reports root, report dirs or allure-results "
                                                    "dirs (default: every run with Allure results)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where index.html goes (default REPORTS/allure-report)."),
    reports_dir: Path = ReportsDir,
) -> None:
    """One single-file Allure HTML report of the runs, built offline by the pinned Allure CLI (Node: npm ci in
    tools/allure), with the history of earlier builds (REPORTS/allure-history.jsonl). Exit 1 without Node/Java."""
    from harness.report import allure_html

    try:
        dirs = allure_html.results_dirs(list(runs or []), reports_dir)
        built = allure_html.build(dirs, output or reports_dir / "allure-report",
                                  reports_dir / allure_html.HISTORY_NAME)
    except HarnessError as e:
        _fail(e)
    out.print(f"allure {built.allure_version}: {len(built.results)} result dir(s) -> {built.index}", markup=False,
              soft_wrap=True)


def _given_value(argv: list[str], param) -> Optional[str]:
    """The value given on the command line to the option a usage error is about (click does not always name it)."""
    opts = [o for o in (getattr(param, "opts", None) or []) if o.startswith("-")]
    for i, a in enumerate(argv):
        for o in opts:
            if a == o and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(o + "="):
                return a[len(o) + 1:]
    return None


def main(argv: Optional[list[str]] = None) -> None:
    """The console entry (`drill`): every error ends as one line on stderr and a documented exit code.

    Click's usage errors (unknown option, bad value) are one `drill: error:` line, exit 2; anything unexpected is
    one line, exit 1 (DRILL_TRACEBACK=1 prints the traceback as well).
    """
    import os

    try:  # typer >= 0.20 vendors click
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors
    no_args_is_help = getattr(click_errors, "NoArgsIsHelpError", ())  # click >= 8.2

    try:
        code = app(args=argv, prog_name="drill", standalone_mode=False)
    except click_errors.ClickException as e:
        if isinstance(e, no_args_is_help):  # `drill`, `drill lab` alone: the help
            e.show()
        else:  # a usage error: unknown option, bad value, missing argument
            msg = e.format_message()
            given = _given_value(sys.argv[1:] if argv is None else argv, getattr(e, "param", None))
            if given is not None and repr(given) not in msg:
                msg += f" (got {given!r})"
            where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) is not None else ""
            _error_line(UsageError(msg + where))
        code = e.exit_code
    except typer.Abort:
        err.print("drill: aborted", markup=False)
        code = ExitCode.HARNESS_ERROR
    except HarnessError as e:  # anything not caught by a command
        _error_line(e)
        code = e.exit_code
    except KeyboardInterrupt:
        err.print("drill: interrupted", markup=False)
        code = ExitCode.INTERRUPTED
    except Exception as e:  # a bug of the harness: one line, the traceback only on request
        if os.environ.get("DRILL_TRACEBACK"):
            import traceback

            traceback.print_exc()
        _error_line(HarnessError(f"internal error: {type(e).__name__}: {e} (DRILL_TRACEBACK=1 shows where)"))
        code = ExitCode.HARNESS_ERROR
    sys.stdout.flush()
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
