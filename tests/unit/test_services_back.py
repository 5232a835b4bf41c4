"""When the services were back after a fault: from the run's own probes, not from when the check got to look."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.core.timeline import Timeline
from harness.targets.app import ops
from harness.targets.app.probes import _back_at

T0 = 1_800_000_000.0


def run_with(probed: dict[str, list[tuple[float, bool]]]) -> SimpleNamespace:
    tl = Timeline(clock=lambda: T0)
    for svc, samples in probed.items():
        for dt, ok in samples:
            tl.append("probe", svc, {"service": svc, "ok": ok}, t=T0 + dt)
    return SimpleNamespace(timeline=tl)


def streak(start: float, n: int = 5, ok: bool = True) -> list[tuple[float, bool]]:
    return [(start + i * 0.1, ok) for i in range(n)]


def test_the_probes_measure_it_when_the_check_runs_late() -> None:
    # the database endpoint moved at +0.3 s; the step before the check took 26 s (the DR standby's pg_rewind)
    probed = {svc: streak(-0.5, 3) + streak(0.0, 3, ok=False) + streak(0.3 + i * 0.01, 20)
              for i, svc in enumerate(ops.SERVICES)}
    at, by = _back_at(run_with(probed), T0, seen_at=T0 + 26.3)
    assert by == "the run's service probes" and at - T0 == pytest.approx(0.33)


def test_a_service_that_never_went_down_is_back_at_the_fault() -> None:
    probed = {svc: streak(-1.0, 30) for svc in ops.SERVICES}
    at, by = _back_at(run_with(probed), T0, seen_at=T0 + 4.0)
    assert (at, by) == (T0, "the run's service probes")


@pytest.mark.parametrize("probed", [
    {svc: streak(-1.0, 30) for svc in ops.SERVICES[:-1]},                   # a service is not probed
    {**{svc: streak(-1.0, 30) for svc in ops.SERVICES}, "api-gateway": streak(0.0, 10, ok=False)},  # still down
])
def test_without_probes_covering_every_service_the_check_measures_it(probed) -> None:
    at, by = _back_at(run_with(probed), T0, seen_at=T0 + 4.0)
    assert (at - T0, by) == (4.0, "this check")


def test_outside_a_run_the_check_measures_it() -> None:
    assert _back_at(None, T0, seen_at=T0 + 2.5) == (T0 + 2.5, "this check")
