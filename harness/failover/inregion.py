"""Failover inside the primary region (as RDS Multi-AZ): the in-region standby in the region's second availability
zone takes over from a lost primary; the global endpoint stays on the primary region.

The apps reach PostgreSQL through the fault proxy `primary_app_postgres` and the DR standby streams through
`pg_replication`: both stand for the database's endpoint name, which a Multi-AZ failover points at the new
primary (on AWS the DNS record of the instance endpoint flips); here the proxies' upstream is re-pointed.
"""

from __future__ import annotations

import time
from typing import Any

from harness.errors import HarnessError, LabError
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab, toxiproxy
from harness.targets.postgres import ops as pg_ops

__all__ = ["fail_back_in_region", "fail_over_in_region", "in_region_ok"]

HOME = "primary"
INREGION = _lab.INREGION
#: the proxies that stand for the database endpoint of the primary region: the apps' and the DR standby's
ENDPOINT_PROXIES = ("primary_app_postgres", "pg_replication")
TARGET = "postgres:primary"


def _event(configuration: dict | None, event: str, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.event("failover", event, **data)


def _require(t: _lab.LabTarget) -> None:
    if not t.has_inregion():
        raise LabError("this lab has no in-region standby (started before it existed): run `drill lab down` and "
                       "`drill lab up`")


def _role(t: _lab.LabTarget, name: str) -> str:
    return pg_ops.role(lambda: t.pg_node(name, timeout=1))


def serving_node(t: _lab.LabTarget) -> str | None:
    """The node of the primary region that is a running primary ("primary" or the in-region standby), else None."""
    for name in (HOME, INREGION):
        if _role(t, name) == "primary":
            return name
    return None


def _upstream(t: _lab.LabTarget, name: str) -> str:
    return f"127.0.0.1:{t.nodes[name].port}"


def _point_endpoint(t: _lab.LabTarget, http: Any, name: str) -> list[str]:
    """Point the primary region's database endpoint (apps' and DR's proxies) at node `name`; returns the proxies
    that changed."""
    want = _upstream(t, name)
    return [proxy for proxy in ENDPOINT_PROXIES if toxiproxy.ensure_upstream(http, t.toxiproxy_url, proxy, want)]


def _endpoint_on(t: _lab.LabTarget, http: Any, name: str) -> bool:
    want = _upstream(t, name)
    return all(toxiproxy.proxy(http, t.toxiproxy_url, p)["upstream"] == want for p in ENDPOINT_PROXIES)


def _streaming_from(t: _lab.LabTarget, name: str, port: int) -> bool:
    with t.pg_node(name, timeout=1) as c:
        return pg_ops.in_recovery(c) and pg_ops.streaming_from(c, port)


def _on_timeline_of(t: _lab.LabTarget, standby: str, primary: str) -> bool:
    with t.pg_node(primary, timeout=1) as p, t.pg_node(standby, timeout=1) as s:
        return pg_ops.in_recovery(s) and pg_ops.streaming_from(s, t.ports["proxy_pg_replication"]) \
            and pg_ops.timeline_id(s) == pg_ops.timeline_id(p)


def _dr_follows(t: _lab.LabTarget, primary: str, configuration: dict | None, grace_s: float = 10.0) -> dict[str, Any]:
    """The DR standby streams from `primary` (through the re-pointed pg_replication proxy) on its timeline: it
    follows the new timeline by itself (recovery_target_timeline 'latest'), else it is rejoined (pg_rewind)."""
    t0 = time.monotonic()
    try:
        _lab.wait_for(lambda: _on_timeline_of(t, "dr", primary), grace_s, f"DR standby following {primary}")
        how = "followed the new timeline"
    except LabError:
        res = pg_ops.rejoin_as_standby(t.nodes["dr"], lambda: t.pg("dr"), t.nodes[primary],
                                       lambda: t.pg_node(primary), t.ports["proxy_pg_replication"])
        how = res["how"]
    out = {"node": "dr", "upstream": primary, "how": how, "seconds": round(time.monotonic() - t0, 3)}
    _event(configuration, "rejoined", component="postgresql", region="dr", upstream=primary, how=how)
    return out


def in_region_shape(t: _lab.LabTarget) -> dict[str, bool]:
    """The primary region's starting shape: node "primary" writable, the in-region standby streaming from it
    (synchronously), the database endpoint on it."""
    if not t.has_inregion():
        return {}

    def sync() -> bool:
        with t.pg_node(HOME, timeout=1) as c:
            rows = c.execute("SELECT application_name, sync_state FROM pg_stat_replication").fetchall()
        return (t.nodes[INREGION].application_name, "sync") in [tuple(r) for r in rows]

    with t.http(timeout=2.0) as http:
        return {"postgres_home_is_primary_node": _lab.quiet(lambda: _role(t, HOME) == "primary", False),
                "postgres_inregion_streaming": bool(_lab.quiet(lambda: _streaming_from(t, INREGION, t.nodes[HOME].port),
                                                               False)),
                "postgres_inregion_sync": bool(_lab.quiet(sync, False)),
                "database_endpoint_home": bool(_lab.quiet(lambda: _endpoint_on(t, http, HOME), False))}


def in_region_ok(configuration: dict | None = None, secrets: dict | None = None) -> bool:
    """Probe: the primary region is in its starting shape (in_region_shape all true)."""
    shape = in_region_shape(_lab.resolve(configuration))
    return bool(shape) and all(shape.values())


def fail_over_in_region(timeout_s: float = 30.0, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The Multi-AZ failover after the primary region's PostgreSQL primary was lost: the in-region standby (the
    region's second availability zone) is promoted, the database endpoint points at it (the apps reconnect), the
    DR standby follows it. The global endpoint is not touched. Refuses while the old primary still answers as a
    primary (it must be lost or stopped first). Rollback: fail_back_in_region."""
    if guard.is_dry_run(configuration):  # the primary was not really lost: record the plan, as runbook.fail_over does
        _event(configuration, "planned", dry_run=True, to_node=INREGION, via="multi-az")
        return {"dry_run": True, "to_node": INREGION}
    t = _lab.resolve(configuration)
    _require(t)
    if _role(t, HOME) == "primary":
        raise HarnessError(f"not failing over inside the primary region: PostgreSQL {HOME} still answers as a "
                           "primary (lose or stop it first)")
    node = t.nodes[INREGION]
    inj = guard.inject("fail_over_in_region", TARGET, action="promote_replica", revert=(fail_back_in_region, {}),
                       regions=(HOME,), components=("postgresql",), configuration=configuration,
                       details={"to_node": INREGION, "port": node.port})
    if not inj.proceed:
        return inj.to_dict()
    t0 = time.monotonic()
    _event(configuration, "detected", component="postgresql", region=HOME, node=HOME,
           reason=f"PostgreSQL {HOME} is {_role(t, HOME)}", via="multi-az")
    role = _role(t, INREGION)
    if role == "down":
        raise LabError(f"the in-region standby {INREGION} does not answer on port {node.port}; nothing to promote")
    pg = pg_ops.promote(lambda: t.pg_node(INREGION), timeout=timeout_s)
    _event(configuration, "promoted", component="postgresql", region=HOME, node=INREGION, seconds=pg["seconds"],
           already_primary=pg["already_primary"], via="multi-az")
    with t.http() as http:
        changed = _point_endpoint(t, http, INREGION)
    _event(configuration, "traffic_switched", component="postgresql", region=HOME, node=INREGION,
           proxies=changed, via="multi-az endpoint")
    dr = _dr_follows(t, INREGION, configuration)
    return {"promoted": INREGION, "seconds": round(time.monotonic() - t0, 3), "promote": pg,
            "endpoint_proxies": changed, "dr": dr, "fault_id": inj.entry.id}


def fail_back_in_region(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Back to the starting shape inside the primary region (idempotent): node "primary" is the primary again, the
    in-region standby streams from it synchronously, the database endpoint and the DR standby follow it.

    When the in-region standby serves: the old primary rejoins it as a standby (pg_rewind; its data dir copied
    aside first), catches up, the in-region node shuts down cleanly, the old primary replays all of it and is
    promoted (a switchover: nothing written on the in-region node is lost, checked by content), the endpoint
    moves back, the in-region node rejoins as standby. Marks fail_over_in_region and the primary's
    kill/stop faults reverted.
    """
    t = _lab.resolve(configuration)
    if not t.has_inregion():
        return {"changed": False, "reason": "no in-region standby in this lab"}
    t0 = time.monotonic()
    steps: list[dict[str, Any]] = []
    data_check: dict[str, Any] = {}
    before = in_region_shape(t)
    if all(before.values()) and _lab.quiet(lambda: _on_timeline_of(t, "dr", HOME), False):
        reverted = [i for fault in ("fail_over_in_region", "kill_primary", "stop_primary")
                    for i in guard.mark_reverted(fault, TARGET, configuration, how="fail_back_in_region")]
        return {"changed": False, "seconds": 0.0, "steps": [], "reverted": reverted, "shape": before}
    if not all(before.values()):
        _event(configuration, "failback_started", to_region=HOME, scope="in-region", shape=before)
    serving = serving_node(t)
    with t.http(timeout=5.0) as http:
        if serving == INREGION:
            if _role(t, HOME) == "primary":
                raise HarnessError(f"not failing back: both {HOME} and {INREGION} are primaries; reconcile by hand")
            res = pg_ops.rejoin_as_standby(t.nodes[HOME], lambda: t.pg_node(HOME), t.nodes[INREGION],
                                           lambda: t.pg_node(INREGION), t.nodes[INREGION].port)
            steps.append({"step": "old primary rejoined as standby", **res})
            _event(configuration, "rejoined", component="postgresql", region=HOME, node=HOME, upstream=INREGION,
                   how=res["how"])
            pg_ops.wait_caught_up(lambda: t.pg_node(INREGION), lambda: t.pg_node(HOME))
            with t.pg_node(INREGION) as c:
                data_check["source"] = pg_ops.data_fingerprint(c)
                c.execute("CHECKPOINT")
            t.nodes[INREGION].stop(mode="fast", timeout=30)
            lsn = pg_ops.checkpoint_lsn(t.nodes[INREGION])
            pg_ops.wait_replayed(lambda: t.pg_node(HOME), lsn)
            pg = pg_ops.promote(lambda: t.pg_node(HOME))
            steps.append({"step": "switchover", "lsn": lsn, "promote_s": pg["seconds"]})
            _event(configuration, "promoted", component="postgresql", region=HOME, node=HOME, seconds=pg["seconds"],
                   via="switchover")
            with t.pg_node(HOME) as c:
                data_check["missing"] = pg_ops.missing_from(c, data_check["source"])
            if data_check["missing"]:
                raise HarnessError(f"in-region failback lost data written on {INREGION}: rows missing on {HOME} in "
                                   f"{', '.join(data_check['missing'])} (data dir before the rejoin: "
                                   f"{res.get('kept_aside')})")
        elif serving is None:
            disk = pg_ops.disk_state(t.nodes[HOME])
            if not disk["primary"]:
                raise LabError(f"no primary in the primary region and {HOME}'s data dir is a standby's; "
                               "run fail_back")
            pg_ops.wait_reaped(t.nodes[HOME])
            t.nodes[HOME].start()  # the lost primary: the in-region standby was never promoted
            steps.append({"step": f"{HOME} started"})
        changed = _point_endpoint(t, http, HOME)
        if changed:
            steps.append({"step": "database endpoint back", "proxies": changed})
            _event(configuration, "traffic_switched", component="postgresql", region=HOME, node=HOME, proxies=changed,
                   via="multi-az endpoint")
        res = pg_ops.rejoin_as_standby(t.nodes[INREGION], lambda: t.pg_node(INREGION), t.nodes[HOME],
                                       lambda: t.pg_node(HOME), t.nodes[HOME].port, keep_copy=serving != INREGION)
        steps.append({"step": "in-region standby streaming", "how": res["how"]})
        if res["how"] != "already streaming":
            _event(configuration, "rejoined", component="postgresql", region=HOME, node=INREGION, upstream=HOME,
                   how=res["how"])
        if _role(t, "dr") != "primary":  # a region failover's DR primary is fail_back's to settle
            steps.append({"step": "dr standby", **_dr_follows(t, HOME, configuration, grace_s=5.0)})
    try:
        _lab.wait_for(lambda: all(in_region_shape(t).values()), 15, "the primary region in shape")
    except LabError:
        after = in_region_shape(t)
        raise LabError(f"in-region failback finished but the primary region is not in shape: "
                       f"{', '.join(k for k, v in after.items() if not v)}")
    reverted = []
    for fault in ("fail_over_in_region", "kill_primary", "stop_primary"):
        reverted += guard.mark_reverted(fault, TARGET, configuration, how="fail_back_in_region")
    seconds = round(time.monotonic() - t0, 3)
    if not all(before.values()):
        _event(configuration, "failback_complete", to_region=HOME, scope="in-region", seconds=seconds,
               data_check={k: v for k, v in data_check.items() if k != "source"})
    return {"changed": not all(before.values()), "seconds": seconds, "steps": steps, "reverted": reverted,
            "shape": in_region_shape(t)}
