"""The `drill` command line: lab management, drills, calibration, detection, recovery, validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from harness.errors import ExitCode, HarnessError

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


def _fail(e: HarnessError) -> None:
    err.print(f"drill: error: {e}", markup=False)
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
    out.print("lab stopped" if stopped else "no lab was running")


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
        err.print(f"drill: error: {e}", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("drill: interrupted", markup=False)
        sys.exit(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    main()
