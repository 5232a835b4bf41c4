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
    #: the catalog's share it draws: scenarios tagged `cadence_tag` at one of `levels` (None: runs `experiment`)
    cadence_tag: str | None = None
    levels: tuple[int, ...] = ()
    #: the scenarios' own drill_lab_approvals are dropped: every gate needs a named approver (--approve)
    explicit_approval: bool = False

    @property
    def draws(self) -> bool:
        return self.cadence_tag is not None

    def experiment_path(self) -> Path | None:
        return EXPERIMENTS / self.experiment if self.experiment else None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("ci-smoke", "CI smoke: a fast level 3 (primary region loss) on the embedded lab", "every CI run",
                None, {"drill_writers": 4, "drill_write_rate": 200, "drill_probe_interval_s": 0.1},
                lab_approvals=("dr_region_switch",), cadence_tag="ci", levels=(3,),
                description="The catalog's level-3 scenarios tagged `ci` (the region failover drill), small and "
                            "fast: measured RTO/RPO per service, the level's downtime, integrity, checklist, "
                            "failback."),
        Profile("monthly-chaos", "Monthly chaos: components fail one at a time and self-heal", "monthly",
                None, {"drill_writers": 2, "drill_write_rate": 100, "drill_probe_interval_s": 0.1},
                cadence_tag="monthly", levels=(1, 2),
                description="The catalog's level-1 and level-2 scenarios tagged `monthly`, one after another on "
                            "the same lab: each must heal (level 1) or recover semi-automatically (level 2) "
                            "within its level's downtime and every service's RTO/RPO."),
        Profile("semiannual-simulation", "Semiannual simulation: level-3 disasters, corruption repair and restores",
                "every six months", None, {"drill_writers": 4, "drill_write_rate": 200, "drill_probe_interval_s": 0.1},
                lab_approvals=("dr_region_switch", "data_restore_from_backup", "database_point_in_time_recovery"),
                cadence_tag="semiannual", levels=(3, 4),
                description="The catalog's scenarios tagged `semiannual`: level 3 (region loss, corruption repaired "
                            "from PITR, ...) and the restore from the DR-region copies (the natural disaster, level "
                            "4), one after another on the same lab."),
        Profile("tabletop", "Quarterly tabletop: walk the plan against the systems", "quarterly", "tabletop.json",
                {"drill_expects_fault": False},
                description="pre_test evidence from the real systems, the runbook in catalog order, escalation and "
                            "gates listed, every catalog experiment and feature validated and listed; nothing is "
                            "injected."),
        Profile("annual-full-dr", "Annual full DR test: level-3 and level-4 disasters under load", "yearly",
                None, {"drill_writers": 8, "drill_write_rate": None, "drill_probe_interval_s": 0.1},
                cadence_tag="annual", levels=(3, 4), explicit_approval=True,
                description="The plan's full DR test: the catalog's level-3 and level-4 scenarios tagged `annual` "
                            "(region loss, the long outage and failback ...) under load. Every gate needs a named "
                            "approver (--approve GATE=WHO); no lab pre-approval."),
    )
}


def get(name: str) -> Profile | None:
    return PROFILES.get(name)


def drawing_profiles() -> tuple[str, ...]:
    """The profiles that draw catalog scenarios by tag (every one but the tabletop)."""
    return tuple(p.name for p in PROFILES.values() if p.draws)
