"""Region loss as one fault: SIGKILL its PostgreSQL and its Valkey, then its apps go; reverted by fail_back."""

from __future__ import annotations

import time

import httpx

from harness.safety import guard
from harness.failover.failback import fail_back
from harness.failover.planes import planes_for
from harness.targets import _lab

__all__ = ["fail_region"]


def fail_region(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Lose region `region` entirely, recorded as ONE fault (its inject event is the fault time). Rollback: fail_back."""
    _lab.check_region(region)
    inj = guard.inject("fail_region", f"region:{region}", revert=(fail_back, {"to_region": "primary"}),
                       regions=(region,), components=("app", "postgresql", "redis"), configuration=configuration,
                       details={"steps": ["SIGKILL postgresql", "SIGKILL valkey", "scale apps to 0"]})
    if not inj.proceed and not guard.dry_run_elsewhere(configuration):
        return inj.to_dict()
    # a dry run against a real environment goes through the planes too: their calls are recorded, none is sent
    t = None if guard.dry_run_elsewhere(configuration) else _lab.resolve(configuration)
    t0 = time.time()
    with httpx.Client(timeout=3.0, trust_env=False) if t is None else t.http() as http:
        planes = planes_for(t, http, configuration)
        # the data layer dies first and hard, as in a real region loss: whatever WAL the standby had not
        # received yet is gone, and the ledger measures exactly that; the apps die with their region after
        steps = planes.data.kill(region)
        planes.apps.scale(region, 0, wait=False)
    if t is None:
        return {**inj.to_dict(), "region": region, "dry_run": True, "steps": steps, "planes": planes.describe()}
    steps.append({"step": "apps scaled to 0", "via": planes.apps.via, "at_s": round(time.time() - t0, 3)})
    return {"region": region, "fault_id": inj.entry.id, "injected_at": inj.entry.injected_at, "steps": steps,
            "planes": planes.describe()}
