"""Timing helpers of the tests: one timeout multiplier, scaled deadlines and polling ("... after N seconds").

Every timed assertion of a test polls up to a deadline scaled by DRILL_TIMEOUT_MULTIPLIER (default 1;
slow or loaded machines: 2 or 3), the multiplier the Gherkin steps use too (steps/timing.py). Speed
figures are measured by the benches in bench/, not asserted here.
"""

from __future__ import annotations

# one multiplier and one poll for the steps and the tests: they live with the steps, which ship in the package
from steps.timing import MULTIPLIER, poll, scaled

__all__ = ["MULTIPLIER", "poll", "processes_mentioning", "scaled"]


def processes_mentioning(markers: list[str]) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line mentions one of `markers`."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if any(m in cmd for m in markers):
            found.append((p.info["pid"], cmd))
    return found
