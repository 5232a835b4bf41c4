"""`drill cadence`: the last recorded run of each of the plan's test types and which are overdue per their cadence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from harness.core.durations import format_duration

from .history import Run


@dataclass(frozen=True)
class CadenceStatus:
    """One test type of the plan: its cadence, its last run (dry runs do not count) and whether it is overdue."""

    test_type: str
    frequency: str
    interval_s: float
    profile: str
    last_run_id: str | None
    last_started_at: str | None
    last_status: str | None
    age_s: float | None
    overdue: bool
    due_in_s: float | None  # negative when overdue; None when never run

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        if self.last_run_id is None:
            last = "never run"
        else:
            last = f"last {self.last_run_id} ({self.last_status}) {format_duration(self.age_s or 0)} ago"
        state = "OVERDUE" if self.overdue else f"due in {format_duration(self.due_in_s or 0)}"
        return (f"{self.test_type:<11} {self.frequency:<11} every {format_duration(self.interval_s):<6} "
                f"profile {self.profile:<22} {last}: {state}")


def cadence(test_types: Iterable[Any], runs: Iterable[Run], now: datetime | None = None) -> list[CadenceStatus]:
    """For each test type (name, frequency, interval_s, profile), its newest non-dry run (run kind = the type's
    profile) and whether the interval has passed since it started (never run: overdue)."""
    now = now or datetime.now(timezone.utc)
    runs = [r for r in runs if not r.dry_run]
    out = []
    for t in test_types:
        mine = sorted((r for r in runs if r.kind in (t.profile, t.name)), key=lambda r: r.started_at)
        last = mine[-1] if mine else None
        if last is None:
            out.append(CadenceStatus(t.name, t.frequency, t.interval_s, t.profile, None, None, None, None, True, None))
            continue
        age = (now - datetime.fromisoformat(last.started_at)).total_seconds()
        due_in = t.interval_s - age
        out.append(CadenceStatus(t.name, t.frequency, t.interval_s, t.profile, last.run_id, last.started_at,
                                 last.status, round(age, 3), due_in < 0, round(due_in, 3)))
    return out
