"""Valkey faults with their rollbacks: kill the primary, promote the replica, rejoin as replica."""

from __future__ import annotations

import os
import signal
from typing import Any

from harness.safety import context as run_context
from harness.safety import guard
from harness.errors import LabError, UsageError
from harness.lab import procs
from harness.targets import _lab
from harness.targets.redis import ops

__all__ = ["demote_replica", "kill_primary", "promote_replica", "rejoin_as_replica", "restore_primary"]


def _target(region: str) -> str:
    return f"redis:{_lab.check_region(region)}"


def _failover_event(configuration: dict | None, event: str, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.event("failover", event, **data)


def kill(t: _lab.LabTarget, region: str) -> int | None:
    """SIGKILL Valkey `region`; returns the pid it had (None when it was not running)."""
    pid = t.lab.valkey_pid(region)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return pid
    procs.reap(pid)
    _lab.wait_for(lambda: not procs.alive(pid), 10, f"Valkey {region} (pid {pid}) gone")
    return pid


def start_as_replica(t: _lab.LabTarget, region: str, upstream: str, timeout: float = 15.0) -> dict[str, Any]:
    """Start Valkey `region` if it is down (as a replica from its first instant) and link it to `upstream`."""
    with t.redis(upstream) as up:
        if ops.role(up) != "master":
            raise LabError(f"refusing to make Valkey {region} a replica of {upstream}: {upstream} is not a master")
    port = t.redis_link_port(upstream, region)
    started = t.lab.valkey_pid(region) is None
    if started:
        t.lab.start_valkey(region, replicaof_port=port)
    with t.redis(region) as c:
        ops.replicate(c, port, timeout)
    return {"region": region, "upstream": upstream, "link_port": port, "started": started}


def make_master(t: _lab.LabTarget, region: str) -> dict[str, Any]:
    """Valkey `region` ends as the master with the other region replicating from it, without losing data.

    A down node restarts as a replica of the node holding the data (promoted first if it was a replica),
    syncs, and takes over by a controlled switchover.
    """
    oth = _lab.other(region)
    out: dict[str, Any] = {"region": region}
    with t.redis(oth) as other_c:
        other_role = ops.role(other_c)
        if t.lab.valkey_pid(region) is None:
            if other_role == "down":
                t.lab.start_valkey(region)  # nothing holds data: it starts empty as master
                out["how"] = "started empty (no node held data)"
            else:
                if other_role == "slave":
                    ops.promote(other_c)  # keep what the replica holds
                start_as_replica(t, region, oth)
        with t.redis(region) as c:
            if ops.role(c) == "master" and ops.role(other_c) == "master":
                # two masters after a failover: the other region served last, its data wins
                ops.replicate(c, t.redis_link_port(oth, region))
                out["note"] = f"{region} was a second master; resynced from {oth}"
            if ops.role(c) == "slave" and ops.role(other_c) == "master":
                ops.replicate(c, t.redis_link_port(oth, region))
                out["switchover"] = ops.switchover(other_c, c, t.redis_link_port(region, oth))
                out.setdefault("how", "switchover")
            elif ops.role(c) == "master":
                out.setdefault("how", "already master")
        if ops.role(other_c) == "down":  # the pair is whole again: a lost replica restarts and resyncs
            start_as_replica(t, oth, region)
            out["replica_restarted"] = oth
        else:
            ops.replicate(other_c, t.redis_link_port(region, oth))
    return out


def kill_primary(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """SIGKILL Valkey `region`. Rollback: restore_primary (back in its role, no data lost from the replica)."""
    guard.check("kill_primary", _target(region), regions=(region,), components=("redis",),
                configuration=configuration)
    t = _lab.resolve(configuration)
    with t.redis(region, timeout=1) as c:
        was = ops.role(c)
    inj = guard.inject("kill_primary", _target(region),
                       revert=(restore_primary, {"region": region, "role": was if was != "down" else "master"}),
                       regions=(region,), components=("redis",), configuration=configuration,
                       details={"signal": "SIGKILL", "role": was})
    if not inj.proceed:
        return inj.to_dict()
    pid = kill(t, region)
    return {"region": region, "killed": pid is not None, "pid": pid, "role": was, "fault_id": inj.entry.id}


def restore_primary(region: str = "primary", role: str = "master", configuration: dict | None = None,
                    secrets: dict | None = None) -> dict:
    """Bring Valkey `region` back in `role` ("master": via the replica's data and a switchover; "slave": rejoin)."""
    if role not in ("master", "slave"):
        raise UsageError(f"role {role!r} is not master or slave")
    t = _lab.resolve(configuration)
    if role == "master":
        res = make_master(t, region)
    else:
        res = start_as_replica(t, region, _lab.other(region))
    res["reverted"] = guard.mark_reverted("kill_primary", _target(region), configuration)
    return res


def promote_replica(region: str = "dr", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """REPLICAOF NO ONE on Valkey `region`. Rollback: demote_replica."""
    inj = guard.inject("promote_replica", _target(region), revert=(demote_replica, {"region": region}),
                       regions=(region,), components=("redis",), configuration=configuration)
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    with t.redis(region) as c:
        changed = ops.promote(c)
    _failover_event(configuration, "promoted", component="redis", region=region, already_master=not changed)
    return {"region": region, "promoted": changed, "fault_id": inj.entry.id}


def demote_replica(region: str = "dr", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Undo promote_replica: `region` replicates from the other region again, when that one is a master."""
    t = _lab.resolve(configuration)
    oth = _lab.other(region)
    with t.redis(oth, timeout=1) as c:
        other_role = ops.role(c)
    if other_role != "master":
        res: dict[str, Any] = {"region": region, "how": f"skipped: {oth} is not a running master, {region} keeps serving"}
    else:
        res = start_as_replica(t, region, oth)
    res["reverted"] = guard.mark_reverted("promote_replica", _target(region), configuration)
    return res


def rejoin_as_replica(region: str = "primary", upstream_region: str = "dr", configuration: dict | None = None,
                      secrets: dict | None = None) -> dict:
    """Valkey `region` (restarted with the lab's command line if it is down) replicates from `upstream_region`."""
    if region == upstream_region:
        raise UsageError(f"region {region!r} cannot replicate from itself")
    t = _lab.resolve(configuration)
    res = start_as_replica(t, region, upstream_region)
    _failover_event(configuration, "rejoined", component="redis", region=region, upstream=upstream_region)
    return res
