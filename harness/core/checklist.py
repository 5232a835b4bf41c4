"""Evaluates the plan's drill checklist (pre_test / during_test / post_test) from what the run observed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from harness.core.durations import format_duration
from harness.core.plan import CHECKLIST_PHASES, ChecklistItem, PlanError

STATUSES = ("pass", "fail", "skipped")
NOT_OBSERVED = "not observed in this run"


@dataclass(frozen=True)
class Observation:
    """Evidence for one checklist item: what was seen and the verdict."""

    status: str
    observed: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown checklist status {self.status!r}; expected one of {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    @classmethod
    def of(cls, ok: bool, observed: str) -> "Observation":
        return cls("pass" if ok else "fail", observed)


@dataclass(frozen=True)
class ChecklistResult:
    """A report.json `checklist` entry."""

    phase: str
    id: str
    item: str
    expected: str
    observed: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "id": self.id, "item": self.item, "expected": self.expected,
                "observed": self.observed, "status": self.status}


def _as_observation(item_id: str, v: Any) -> Observation:
    if isinstance(v, Observation):
        return v
    if isinstance(v, bool):
        return Observation.of(v, "observed" if v else "observed failing")
    if isinstance(v, Mapping):
        status = v["status"] if "status" in v else v.get("ok")
        if isinstance(status, bool):
            status = "pass" if status else "fail"
        try:
            return Observation(str(status), str(v.get("observed", "")))
        except ValueError as e:
            raise PlanError(f"checklist observation for {item_id!r}: {e}") from e
    if isinstance(v, tuple) and len(v) == 2:
        return Observation(str(v[0]), str(v[1]))
    raise PlanError(f"checklist observation for {item_id!r} must be an Observation, mapping or bool, got {type(v).__name__}")


def evaluate(items: Iterable[ChecklistItem], observations: Mapping[str, Any]) -> list[ChecklistResult]:
    """One result per plan item, in phase order; an item without observation is skipped.

    Observations map item id -> Observation, {"status" or "ok" (bool), "observed"}, (status, observed) or bool.
    An observation for an id the plan does not have raises PlanError (a typo must not pass silently).
    """
    items = list(items)
    ids = {i.id for i in items}
    for k in observations:
        if k not in ids:
            raise PlanError(f"checklist observation for unknown item {k!r} (known: {', '.join(sorted(ids))})")
    out = []
    for phase in CHECKLIST_PHASES:
        for it in items:
            if it.phase != phase:
                continue
            if it.id in observations:
                ob = _as_observation(it.id, observations[it.id])
            else:
                ob = Observation("skipped", NOT_OBSERVED)
            out.append(ChecklistResult(it.phase, it.id, it.item, it.expected, ob.observed, ob.status))
    return out


def within(measured_s: float | None, threshold_s: float | None, what: str) -> Observation:
    """pass when measured < threshold (the plan writes "< 4h"); fail when over or never measured."""
    if threshold_s is None:
        raise PlanError(f"checklist item for {what} has no threshold")
    if measured_s is None:
        return Observation("fail", f"{what} not achieved (never recovered)")
    ok = measured_s < threshold_s
    return Observation.of(ok, f"{what} {format_duration(measured_s)} ({'<' if ok else '>='} {format_duration(threshold_s)})")


def worst(values: Iterable[float | None]) -> float | None:
    """Largest measured value, None if any is None (never achieved); None for no values too."""
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return max(v for v in vals if v is not None)


def summary(results: Iterable[ChecklistResult]) -> dict[str, int]:
    """Counts per status."""
    counts = {s: 0 for s in STATUSES}
    for r in results:
        counts[r.status] += 1
    return counts
