"""PostgreSQL faults with their rollbacks: kill/stop/pause the primary, promote the standby, cut replication, rejoin."""

from __future__ import annotations

import signal
from typing import Any

from harness.safety import context as run_context
from harness.safety import guard
from harness.errors import HarnessError, UsageError
from harness.targets import _lab, toxiproxy
from harness.targets.postgres import ops

__all__ = ["cut_replication", "demote_standby", "kill_primary", "pause_primary", "promote_standby", "rejoin_as_standby",
           "restore_primary", "restore_replication", "resume_primary", "stop_primary"]

STOP_MODES = ("smart", "fast", "immediate")
REPLICATION_PROXY = "pg_replication"


def _target(region: str) -> str:
    return f"postgres:{_lab.check_region(region)}"


def _failover_event(configuration: dict | None, event: str, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.event("failover", event, **data)


def kill_primary(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """SIGKILL PostgreSQL `region` (postmaster and backends): a crash. Rollback: restore_primary."""
    _lab.check_region(region)
    inj = guard.inject("kill_primary", _target(region), revert=(restore_primary, {"region": region}),
                       regions=(region,), components=("postgresql",), configuration=configuration,
                       details={"signal": "SIGKILL"})
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    node = t.node(region)
    pid = node.pid()
    node.kill()
    return {"region": region, "killed": pid is not None, "pid": pid, "fault_id": inj.entry.id}


def stop_primary(mode: str = "fast", region: str = "primary", configuration: dict | None = None,
                 secrets: dict | None = None) -> dict:
    """Stop PostgreSQL `region` with pg_ctl -m `mode` (smart, fast, immediate). Rollback: restore_primary."""
    if mode not in STOP_MODES:
        raise UsageError(f"stop mode {mode!r} is not one of {', '.join(STOP_MODES)}")
    _lab.check_region(region)
    inj = guard.inject("stop_primary", _target(region), revert=(restore_primary, {"region": region}),
                       regions=(region,), components=("postgresql",), configuration=configuration,
                       details={"mode": mode})
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    node = t.node(region)
    was = node.is_running()
    node.stop(mode=mode)
    return {"region": region, "stopped": was, "mode": mode, "fault_id": inj.entry.id}


def _superseded_by(t: _lab.LabTarget, region: str) -> str | None:
    """Why PostgreSQL `region` must not serve as a primary again because the other region took over, or None.

    The other region took over when it is a running primary, or when it is down (or hung) and its data dir
    says it was a primary on a later timeline than `region`'s (a promoted standby). A node that is down is
    judged from its data dir (pg_controldata, standby.signal), never from a failed connection. When both
    data dirs were primaries on the same timeline, nobody can tell: that counts as taken over too.
    """
    oth = _lab.other(region)
    other_role = ops.role(lambda: t.pg(oth, timeout=1))
    if other_role == "primary":
        return f"{oth} is a running primary"
    if other_role == "standby":
        return None
    mine, theirs = ops.disk_state(t.node(region)), ops.disk_state(t.node(oth))
    if mine["standby"] or theirs["standby"]:
        return None
    if theirs["timeline"] >= mine["timeline"]:
        return (f"{oth} is down but was promoted ({theirs['state']}, timeline {theirs['timeline']}; "
                f"{region} is on timeline {mine['timeline']}) and may hold writes {region} lacks")
    return None


def restore_primary(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Bring PostgreSQL `region` back (idempotent); if the other region was promoted meanwhile, as its standby.

    Never a second primary: when the other region took over and is down, `region` stays stopped and this
    raises (fail_back decides which data wins).
    """
    t = _lab.resolve(configuration)
    node = t.node(region)
    oth = _lab.other(region)
    result: dict[str, Any] = {"region": region}
    if ops.is_paused(node):
        why = _superseded_by(t, region) if ops.disk_state(node)["primary"] else None
        if why is not None:
            raise HarnessError(f"not restoring PostgreSQL {region}: it is paused and {why}; run fail_back")
        ops.signal_cluster(node, signal.SIGCONT)
    ops.wait_reaped(node)
    inregion = _lab.INREGION if region == "primary" and t.has_inregion() else None
    if node.is_running():
        result["how"] = "already running"
    elif inregion and ops.role(lambda: t.pg_node(inregion)) == "primary":
        # the in-region standby took over (Multi-AZ failover): never a second primary; the in-region failback
        # (harness.failover.inregion) switches back
        result.update(ops.rejoin_as_standby(node, lambda: t.pg(region), t.nodes[inregion],
                                            lambda: t.pg_node(inregion), t.nodes[inregion].port))
        _failover_event(configuration, "rejoined", component="postgresql", region=region, upstream=inregion,
                        how=result["how"], kept_aside=result.get("kept_aside"))
    elif ops.role(lambda: t.pg(oth)) == "primary":  # the other region took over: never a second primary
        result.update(ops.rejoin_as_standby(node, lambda: t.pg(region), t.node(oth), lambda: t.pg(oth),
                                            t.pg_stream_port(oth, region)))
        _failover_event(configuration, "rejoined", component="postgresql", region=region, upstream=oth,
                        how=result["how"], kept_aside=result.get("kept_aside"))
    else:
        why = _superseded_by(t, region)
        if why is not None:
            raise HarnessError(f"not restoring PostgreSQL {region} as a primary: {why}; it stays stopped "
                               f"(start {oth} with restore_primary region={oth}, or run fail_back)")
        node.start()
        result["how"] = "started"
    result["reverted"] = guard.mark_reverted(("kill_primary", "stop_primary"), _target(region), configuration)
    return result


def pause_primary(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """SIGSTOP every process of PostgreSQL `region` (a hung server). Rollback: resume_primary."""
    _lab.check_region(region)
    inj = guard.inject("pause_primary", _target(region), revert=(resume_primary, {"region": region}),
                       regions=(region,), components=("postgresql",), configuration=configuration,
                       details={"signal": "SIGSTOP"})
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    node = t.node(region)
    pids = ops.signal_cluster(node, signal.SIGSTOP)
    return {"region": region, "paused_pids": pids, "fault_id": inj.entry.id}


def resume_primary(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """SIGCONT every process of PostgreSQL `region` (idempotent) - unless the other region took over meanwhile:
    then the hung primary stays stopped (resuming it would make a second writable primary) and fail_back
    rejoins it as a standby; the result says so and the pause stays in the fault ledger."""
    t = _lab.resolve(configuration)
    node = t.node(region)
    if ops.is_paused(node):
        mine = ops.disk_state(node)
        why = _superseded_by(t, region) if mine["primary"] else None
        if why is not None:
            msg = f"left paused: {why}; resuming would make a second primary, fail_back rejoins it as a standby"
            _failover_event(configuration, "not_resumed", component="postgresql", region=region, reason=why)
            return {"region": region, "resumed_pids": [], "how": msg, "reverted": []}
    pids = ops.signal_cluster(node, signal.SIGCONT)
    return {"region": region, "resumed_pids": pids, "how": "resumed" if pids else "not paused",
            "reverted": guard.mark_reverted("pause_primary", _target(region), configuration)}


def promote_standby(region: str = "dr", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Promote standby `region` (pg_promote) and wait until it is writable. Rollback: demote_standby."""
    _lab.check_region(region)
    inj = guard.inject("promote_standby", _target(region), action="promote_replica",
                       revert=(demote_standby, {"region": region}), regions=(region,),
                       components=("postgresql",), configuration=configuration)
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    res = ops.promote(lambda: t.pg(region))
    _failover_event(configuration, "promoted", component="postgresql", region=region, seconds=res["seconds"],
                    already_primary=res["already_primary"])
    return {"region": region, **res, "fault_id": inj.entry.id}


def demote_standby(region: str = "dr", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Undo promote_standby: `region` rejoins the other region as its standby (only while that one is a primary).

    When the other region is down, `region` is the only primary and keeps its data: nothing is changed
    ("skipped"); `harness.failover.failback:fail_back` restores the whole lab.
    """
    t = _lab.resolve(configuration)
    oth = _lab.other(region)
    if ops.role(lambda: t.pg(region)) == "standby":
        res: dict[str, Any] = {"region": region, "how": "already a standby"}
    elif ops.role(lambda: t.pg(oth)) != "primary":
        res = {"region": region, "how": f"skipped: {oth} is not a running primary, {region} keeps serving"}
    else:
        res = ops.rejoin_as_standby(t.node(region), lambda: t.pg(region), t.node(oth), lambda: t.pg(oth),
                                    t.pg_stream_port(oth, region))
        _failover_event(configuration, "rejoined", component="postgresql", region=region, upstream=oth, how=res["how"])
    res["reverted"] = guard.mark_reverted("promote_standby", _target(region), configuration)
    return res


def cut_replication(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Disable the pg_replication fault proxy: the standby loses its WAL stream. Rollback: restore_replication."""
    inj = guard.inject("cut_replication", f"toxiproxy:{REPLICATION_PROXY}", revert=(restore_replication, {}),
                       regions=("primary", "dr"), components=("postgresql",), configuration=configuration)
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    with t.http() as http:
        toxiproxy.set_enabled(http, t.toxiproxy_url, REPLICATION_PROXY, False)
    return {"proxy": REPLICATION_PROXY, "enabled": False, "fault_id": inj.entry.id}


def restore_replication(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Enable the pg_replication fault proxy again (idempotent)."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        toxiproxy.set_enabled(http, t.toxiproxy_url, REPLICATION_PROXY, True)
    return {"proxy": REPLICATION_PROXY, "enabled": True,
            "reverted": guard.mark_reverted("cut_replication", f"toxiproxy:{REPLICATION_PROXY}", configuration)}


def rejoin_as_standby(region: str = "primary", upstream_region: str = "dr", configuration: dict | None = None,
                      secrets: dict | None = None) -> dict:
    """PostgreSQL `region` becomes a streaming standby of `upstream_region` (pg_rewind, else a fresh base backup).

    Refuses unless `upstream_region` is a running primary, so the current primary's data is never touched.
    """
    if region == upstream_region:
        raise UsageError(f"region {region!r} cannot rejoin itself as upstream")
    t = _lab.resolve(configuration)
    res = ops.rejoin_as_standby(t.node(region), lambda: t.pg(region), t.node(upstream_region),
                                lambda: t.pg(upstream_region), t.pg_stream_port(upstream_region, region))
    _failover_event(configuration, "rejoined", component="postgresql", region=region, upstream=upstream_region,
                    how=res["how"], seconds=res["seconds"])
    return res
