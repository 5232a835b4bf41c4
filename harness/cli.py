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
) -> None:
    """Start the embedded lab (idempotent: a running lab is reported, not restarted)."""
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
) -> None:
    """Topology plus the health of every component. Exit 1 when no lab runs or it is unhealthy."""
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
def lab_down(state_dir: Optional[Path] = StateDir) -> None:
    """Stop every lab process and remove its data (logs are kept)."""
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
                                           "ci-smoke, annual-full-dr (monthly-chaos, semiannual-simulation, tabletop "
                                           "are planned)."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where to write the report "
                                                                         "(default reports/<run-id>/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Record the planned faults, inject nothing."),
    approve: list[str] = typer.Option([], "--approve", help="Approve a gate of the plan (repeatable): "
                                                            "dr_region_switch, data_restore_from_backup, "
                                                            "database_point_in_time_recovery."),
    plan_overrides: Optional[Path] = typer.Option(None, "--plan-overrides",
                                                  help="YAML merged over the plan (e.g. tighter objectives)."),
    state_dir: Optional[Path] = StateDir,
) -> None:
    """Run a drill: bring the lab up if needed, inject, fail over, measure RTO/RPO, validate, report.

    Exit code: 0 passed, 3 objectives missed, 4 integrity violation, 5 refused by safety, 130 interrupted.
    """
    from harness.drill import runner

    if plan_overrides is not None and not plan_overrides.is_file():
        _fail(UsageError(f"--plan-overrides {str(plan_overrides)!r} does not exist"))
    try:
        code = runner.run(target, report_dir=report_dir, dry_run=dry_run, approvals=tuple(approve),
                          plan_overrides=str(plan_overrides) if plan_overrides else None,
                          state_dir=str(state_dir) if state_dir else None, console=err)
    except HarnessError as e:
        _fail(e)
    raise typer.Exit(code)


@app.command("recover")
def recover_cmd(state_dir: Optional[Path] = StateDir) -> None:
    """Revert every fault still recorded as active in the fault ledger (after a crash or a kill -9)."""
    from harness.drill.fault_ledger import FaultLedger, ledger_path
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
        t.add_row(f"postgres {region}", r["postgres"]["dsn"], h(f"postgres_{region}"))
        t.add_row(f"valkey {region}", r["redis"]["url"], h(f"redis_{region}"))
        t.add_row(f"app {region}", ", ".join(r["app"]["urls"]) or "(0 replicas)", "")
    t.add_row("router (global endpoint)", topo["router"]["url"], f"active region: {topo['router']['active_region']}")
    t.add_row("fault proxy", topo["toxiproxy"]["url"], h("toxiproxy"))
    t.add_row("s3 / aws (moto)", topo["s3"]["endpoint_url"], h("moto"))
    out.print(t)
    verdict = "[green]healthy[/]" if topo.get("healthy") else "[red]unhealthy[/]"
    out.print(f"lab is {verdict}; logs in {topo['logs']}")


def main() -> None:
    try:
        app()
    except HarnessError as e:  # anything not caught by a command
        _error_line(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("drill: interrupted", markup=False)
        sys.exit(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    main()
