"""Region loss as one fault: SIGKILL its PostgreSQL and its Valkey, then its apps go; reverted by fail_back."""

from __future__ import annotations

import time

from harness.safety import guard
from harness.failover.failback import fail_back
from harness.targets import _lab
from harness.targets.app import ops as app_ops
from harness.targets.redis.actions import kill as kill_valkey

__all__ = ["fail_region"]


def fail_region(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Lose region `region` entirely, recorded as ONE fault (its inject event is the fault time). Rollback: fail_back."""
    _lab.check_region(region)
    inj = guard.inject("fail_region", f"region:{region}", revert=(fail_back, {"to_region": "primary"}),
                       regions=(region,), components=("app", "postgresql", "redis"), configuration=configuration,
                       details={"steps": ["SIGKILL postgresql", "SIGKILL valkey", "scale apps to 0"]})
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    t0 = time.time()
    steps = []
    # the data layer dies first and hard, as in a real region loss: whatever WAL the standby had not
    # received yet is gone, and the ledger measures exactly that; the apps die with their region after
    node = t.node(region)
    pg_pid = node.pid()
    node.kill()
    steps.append({"step": "postgresql SIGKILL", "pid": pg_pid, "at_s": round(time.time() - t0, 3)})
    rd_pid = kill_valkey(t, region)
    steps.append({"step": "valkey SIGKILL", "pid": rd_pid, "at_s": round(time.time() - t0, 3)})
    with t.http() as http:
        app_ops.scale(http, t.supervisor_url, region, 0)
    steps.append({"step": "apps scaled to 0", "at_s": round(time.time() - t0, 3)})
    return {"region": region, "fault_id": inj.entry.id, "injected_at": inj.entry.injected_at, "steps": steps}
