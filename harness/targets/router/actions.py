"""Region router actions with their rollback: flip the global endpoint by hand, back to automatic routing."""

from __future__ import annotations

from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab
from harness.targets.router import ops

__all__ = ["clear_override", "switch_region"]


def switch_region(region: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Pin the global endpoint to `region` (manual mode; needs the dr_region_switch gate). Rollback: clear_override."""
    _lab.check_region(region)
    inj = guard.inject("switch_region", f"router:{region}", revert=(clear_override, {}), regions=(region,),
                       components=("router",), configuration=configuration)
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.set_active(http, t.router_url, region)
        st = ops.state(http, t.router_url)
    flip = ops.last_flip_to(st, region)
    s = run_context.of(configuration)
    if s is not None:
        s.event("failover", "traffic_switched", region=region, mode="manual", flip=flip)
    return {"region": region, "active_region": st["active_region"], "mode": st["mode"], "fault_id": inj.entry.id}


def clear_override(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Back to automatic failover routing (idempotent)."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        ops.clear_override(http, t.router_url)
        st = ops.state(http, t.router_url)
    reverted = []
    for region in _lab.REGIONS:
        reverted += guard.mark_reverted("switch_region", f"router:{region}", configuration)
    return {"active_region": st["active_region"], "mode": st["mode"], "reverted": reverted}
