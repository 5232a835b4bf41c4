"""Drill profiles: the plan's test cadences (CI smoke, monthly chaos, semiannual simulation, annual full DR, tabletop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

#: the top-level experiments/, features/ and steps/ folders of the checkout, as installed (setup.py ships
#: them as harness.experiments, harness.features, harness.steps; an editable install maps them back)
EXPERIMENTS = Path(str(files("harness.experiments")))
FEATURES = Path(str(files("harness.features")))
STEPS = Path(str(files("harness.steps")))


@dataclass(frozen=True)
class Profile:
    """A named drill: which experiment, how hard the workload pushes, what the lab pre-approves."""

    name: str
    title: str
    cadence: str
    experiment: str | None
    configuration: dict[str, Any] = field(default_factory=dict)
    lab_approvals: tuple[str, ...] = ()
    description: str = ""

    def experiment_path(self) -> Path | None:
        return EXPERIMENTS / self.experiment if self.experiment else None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("ci-smoke", "CI smoke: primary region loss on the embedded lab", "every CI run",
                "region-failover.json", {"drill_writers": 4, "drill_write_rate": 200, "drill_probe_interval_s": 0.1},
                lab_approvals=("dr_region_switch",),
                description="The full region failover drill, small and fast: measured RTO/RPO per service, "
                            "integrity, checklist, failback."),
        Profile("monthly-chaos", "Monthly chaos: components fail one at a time and self-heal", "monthly",
                "monthly-chaos.json", {"drill_writers": 2, "drill_write_rate": 100, "drill_probe_interval_s": 0.1},
                description="Component faults under the plan's failover policy engine (drill clock 0.01): replica kill "
                            "(self-healing), p99 -> scale_up, Popbill cut (fault isolation), error rate -> rollback, "
                            "replication lag -> alert and promote, a second promotion refused by the cooldown; "
                            "every service must keep or regain its service; integrity validated."),
        Profile("semiannual-simulation", "Semiannual simulation: restore test, then failover and failback",
                "every six months", "semiannual-simulation.json",
                {"drill_writers": 4, "drill_write_rate": 200, "drill_probe_interval_s": 0.1},
                lab_approvals=("dr_region_switch", "data_restore_from_backup"),
                description="Backup taken, verified and restored into a new database (integrity checked there), "
                            "then the region failover drill."),
        Profile("tabletop", "Quarterly tabletop: walk the plan against the systems", "quarterly", "tabletop.json",
                {"drill_expects_fault": False},
                description="pre_test evidence from the real systems, the runbook in catalog order, escalation and "
                            "gates listed, every experiment and feature validated; nothing is injected."),
        Profile("annual-full-dr", "Annual full DR test: switch to the DR region under load", "yearly",
                "region-failover.json", {"drill_writers": 8, "drill_write_rate": None, "drill_probe_interval_s": 0.1},
                description="The plan's full DR test: real switch to DR, business continuity, RTO/RPO attainment. "
                            "Approval of dr_region_switch is required (--approve)."),
    )
}


def get(name: str) -> Profile | None:
    return PROFILES.get(name)
