"""Failback: bring the lab back to its starting shape (primary serving, DR streaming) without losing data written in DR."""

from __future__ import annotations

import signal
import time
from typing import Any

from harness.safety import context as run_context
from harness.safety import guard
from harness.errors import HarnessError, LabError
from harness.failover import inregion
from harness.lab.manager import PRIMARY_REPLICAS
from harness.targets import _lab, toxiproxy
from harness.targets.app import ops as app_ops
from harness.targets.postgres import ops as pg_ops
from harness.targets.redis import actions as rd_actions
from harness.targets.redis import ops as rd_ops
from harness.targets.router import ops as router_ops

__all__ = ["fail_back", "lab_in_shape"]

#: faults whose effects fail_back undoes; their ledger entries are marked reverted by it
COVERED_FAULTS = ("fail_region", "fail_over", "kill_primary", "stop_primary", "pause_primary", "promote_standby",
                  "promote_replica", "cut_replication", "switch_region", "scale_region", "kill_replica",
                  "fail_over_in_region")


def _event(configuration: dict | None, event: str, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.event("failover", event, **data)


def lab_shape(t: _lab.LabTarget, home: str = "primary") -> dict[str, Any]:
    """Is the lab in its starting shape with `home` serving? One boolean per aspect, and "ok"."""
    away = _lab.other(home)
    shape: dict[str, Any] = {}

    def pg_home() -> bool:
        with t.pg(home, timeout=1) as c:
            return pg_ops.writable(c)

    def pg_away() -> bool:
        with t.pg(away, timeout=1) as c:
            return pg_ops.in_recovery(c) and pg_ops.streaming_from(c, t.pg_stream_port(home, away))

    def rd_home() -> bool:
        with t.redis(home, timeout=1) as c:
            return rd_ops.role(c) == "master"

    def rd_away() -> bool:
        with t.redis(away, timeout=1) as c:
            return rd_ops.linked(c, t.redis_link_port(home, away))

    with t.http(timeout=2.0) as http:
        def apps() -> bool:
            st = app_ops.regions(http, t.supervisor_url)
            want = {home: PRIMARY_REPLICAS, away: 0}
            return all(st[r]["desired"] == n and len(app_ops.alive_replicas(st, r)) == n for r, n in want.items())

        def router() -> bool:
            st = router_ops.state(http, t.router_url)
            return st["mode"] == "auto" and st["active_region"] == home

        def proxies() -> bool:
            return toxiproxy.clean(http, t.toxiproxy_url)

        for name, fn in (("postgres_home_primary", pg_home), ("postgres_away_streaming", pg_away),
                         ("redis_home_master", rd_home), ("redis_away_linked", rd_away), ("apps", apps),
                         ("router", router), ("proxies", proxies)):
            shape[name] = bool(_lab.quiet(fn, False))
    if home == "primary":  # the in-region standby streams synchronously, the database endpoint on the primary
        shape.update(inregion.in_region_shape(t))
    shape["not_paused"] = not any(pg_ops.is_paused(n) for n in t.nodes.values())
    shape["ok"] = all(shape.values())
    return shape


def lab_in_shape(to_region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Probe: is the lab in its starting shape with `to_region` serving? ("ok" plus one boolean per aspect)."""
    return lab_shape(_lab.resolve(configuration), _lab.check_region(to_region))


def _pg_state(t: _lab.LabTarget, region: str) -> dict[str, Any]:
    """Live role and timeline of PostgreSQL `region`; for a node that is down, what its data dir says."""
    node = t.node(region)
    st: dict[str, Any] = {"region": region, "role": pg_ops.role(lambda: t.pg(region))}
    if st["role"] == "primary":
        with t.pg(region) as c:
            st["timeline"] = pg_ops.timeline_id(c)
    elif st["role"] == "down":
        pg_ops.wait_reaped(node)
        if node.is_running():
            raise LabError(f"PostgreSQL {region} runs (pid {node.pid()}) but does not answer on port {node.port}; "
                           "not failing back")
        st["disk"] = pg_ops.disk_state(node)
        st["timeline"] = st["disk"]["timeline"]
        st["diverged"] = pg_ops.diverged(node)
    return st


def _describe(st: dict[str, Any]) -> str:
    if st["role"] != "down":
        return f"{st['role']}" + (f" on timeline {st['timeline']}" if "timeline" in st else "")
    return f"down, {st['disk']['state']} on timeline {st['timeline']}" + (
        ", standby.signal" if st["disk"]["standby"] else "")


def _own_writes(div: dict[str, dict[str, list[int]]], side: str) -> dict[str, int]:
    """{table: rows} that `side` ("a_only"/"b_only") holds and the other does not (rows that differ count for both)."""
    out = {}
    for table, d in div.items():
        n = len(d[side]) + len(d["differ"])
        if n:
            out[table] = n
    return out


def _rows_text(own: dict[str, int]) -> str:
    return ", ".join(f"{table} {n}" for table, n in own.items()) or "none"


def _split_brain(t: _lab.LabTarget, http: Any, home: str, states: dict[str, dict[str, Any]]) -> tuple[str, dict]:
    """Both regions writable: keep the one that took writes since they diverged; refuse when both did.

    The loser must hold no vouchers, tax invoices or audit rows the keeper lacks (compared by content). It is
    fenced (read-only, sessions cut) and checked again before anything is rewound.
    """
    away = _lab.other(home)

    def compare() -> tuple[dict, dict[str, dict[str, int]]]:
        with t.pg(home) as a, t.pg(away) as b:
            div = pg_ops.divergence(a, b)
        return div, {home: _own_writes(div, "a_only"), away: _own_writes(div, "b_only")}

    div, own = compare()
    if own[home] and own[away]:
        raise HarnessError(f"not failing back: both regions took writes since they diverged: {home} "
                           f"({_describe(states[home])}) holds {_rows_text(own[home])} rows {away} lacks, {away} "
                           f"({_describe(states[away])}) holds {_rows_text(own[away])} rows {home} lacks; nothing "
                           "changed, reconcile them by hand")
    if own[home] or own[away]:
        keeper = home if own[home] else away
        why = f"only {keeper} took writes since the regions diverged ({_rows_text(own[keeper])} rows)"
    else:  # same rows on both: keep the one the global endpoint sends traffic to
        st = _lab.quiet(lambda: router_ops.state(http, t.router_url), {}) or {}
        keeper = st.get("routing_region") or st.get("active_region") or home
        keeper = keeper if keeper in (home, away) else home
        why = f"neither region took writes since they diverged; {keeper} serves traffic"
    loser = _lab.other(keeper)
    pg_ops.fence_writes(lambda: t.pg(loser), True)
    div, own = compare()
    if own[loser]:
        pg_ops.fence_writes(lambda: t.pg(loser), False)
        raise HarnessError(f"not failing back: both regions took writes since they diverged: {loser} took "
                           f"{_rows_text(own[loser])} rows while being fenced, {keeper} "
                           f"{_rows_text(own[keeper])}; nothing changed, reconcile them by hand")
    return keeper, {"split_brain": True, "fenced": loser, "why": why,
                    "diverged_rows": {r: own[r] for r in (home, away)}}


def _pg_current_primary(t: _lab.LabTarget, http: Any, home: str) -> tuple[str, dict[str, Any]]:
    """The region whose PostgreSQL keeps its data and serves writes, and why; starts or promotes one if none runs.

    A node that is down is judged from its data dir (pg_controldata, standby.signal), never from a failed
    connection. Refuses (HarnessError "not failing back: ...", nothing changed) when the data that would be
    rewound away may hold writes the other lacks and that cannot be settled from here.
    """
    away = _lab.other(home)
    states = {r: _pg_state(t, r) for r in (home, away)}
    info: dict[str, Any] = {"states": {r: _describe(v) for r, v in states.items()}}
    primaries = [r for r in (home, away) if states[r]["role"] == "primary"]
    if len(primaries) == 2:
        keeper, more = _split_brain(t, http, home, states)
        return keeper, {**info, **more}
    if len(primaries) == 1:
        p = primaries[0]
        o = _lab.other(p)
        so = states[o]
        if so["role"] == "down" and so["disk"]["primary"] and so["timeline"] >= states[p]["timeline"]:
            raise HarnessError(f"not failing back: PostgreSQL {o} is down but was a primary on timeline "
                               f"{so['timeline']} ({so['disk']['state']}), not older than {p}'s {states[p]['timeline']}: "
                               f"it may hold writes {p} lacks; nothing changed, compare them by hand")
        if so["role"] == "down" and so["disk"]["primary"] and so.get("diverged"):
            marker = t.node(o).data_dir / pg_ops.DIVERGED_MARKER
            raise HarnessError(f"not failing back: both regions took writes since they diverged: {o} (down) took "
                               f"{_rows_text(so['diverged']['own_rows'])} rows {p} lacks before it was fenced, "
                               f"and {p} serves since; nothing changed, reconcile them by hand, then remove {marker}")
        return p, {**info, "why": f"{p} is the only primary"}
    down_primaries = [r for r in (home, away) if states[r]["role"] == "down" and states[r]["disk"]["primary"]]
    if len(down_primaries) == 2:
        newer = max(down_primaries, key=lambda r: states[r]["timeline"])
        raise HarnessError(f"not failing back: both PostgreSQL regions are down and both were primaries ({home}: "
                           f"{_describe(states[home])}; {away}: {_describe(states[away])}), so which one holds the "
                           f"data to keep is ambiguous; nothing changed: start that one (restore_primary "
                           f"region={newer} starts the later-promoted {newer}) and run fail_back again")
    if down_primaries:
        r = down_primaries[0]
        t.node(r).start()
        return r, {**info, "why": f"{r} was the only primary (started)"}
    for r in (away, home):
        if states[r]["role"] == "standby":
            pg_ops.promote(lambda r=r: t.pg(r))
            return r, {**info, "why": f"no primary: standby {r} promoted"}
    raise LabError("no PostgreSQL node can become primary (both down and both marked standby)")


def _wait_router(t: _lab.LabTarget, http: Any, home: str, timeout_s: float = 30.0) -> dict[str, Any]:
    st = router_ops.state(http, t.router_url)
    if st["mode"] != "auto":
        router_ops.clear_override(http, t.router_url)

    def serving() -> bool:
        s = router_ops.state(http, t.router_url)
        return s["active_region"] == home and s.get("routing_region", home) == home and \
            app_ops.global_health(http, t.router_url)["ok"]

    _lab.wait_for(serving, timeout_s, f"global endpoint serving from {home}", interval=0.1)
    return router_ops.last_flip_to(router_ops.state(http, t.router_url), home) or {}


def _mark_all(configuration: dict | None) -> list[str]:
    led = guard.ledger(configuration)
    ids = []
    for e in led.active():
        if e.fault in COVERED_FAULTS:
            led.mark_reverted(e.id, "fail_back")
            ids.append(e.id)
            s = run_context.of(configuration)
            if s is not None:
                s.event("fault", e.fault, phase="revert", fault_id=e.id, target=e.target, how="fail_back")
    return ids


def _restore_planes(t: _lab.LabTarget, home: str, configuration: dict | None) -> dict[str, Any]:
    """The environment's planes that keep a view of their own (lab-cloud: RDS, ElastiCache, Route 53) show the
    starting shape again once the lab is in it; nothing for the lab's own planes."""
    from harness.failover.planes import planes_for

    with t.http(timeout=5.0) as http:
        return planes_for(t, http, configuration).restore(home)


def fail_back(to_region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Restore the starting shape with `to_region` serving (idempotent; nothing to do when already in shape).

    PostgreSQL: the region that holds the data is found first (a node that is down is judged from its data
    dir; with two writable primaries, by which one took writes since they diverged); when that cannot be
    settled, it refuses ("not failing back: ...") and changes nothing. Then the old primary rejoins DR as a
    standby (pg_rewind; its data dir copied to `<data_dir>.before-rejoin` first), catches up, DR's apps stop,
    DR shuts down cleanly, the old primary replays everything and is promoted, DR rejoins as a standby through
    the pg_replication proxy. Valkey likewise (switchover). Apps primary=2, dr=0; router back to automatic on
    `to_region`; fault proxy reset. Ends with a check that vouchers, tax invoices and audit rows written in DR
    are all on the primary and on the standby, and the failover event "failback_complete".
    """
    home = _lab.check_region(to_region)
    away = _lab.other(home)
    if guard.dry_run_elsewhere(configuration):  # nothing was changed: nothing to bring back, nothing touched
        _event(configuration, "planned", dry_run=True, to_region=home, steps=["fail back to " + home])
        return {"changed": False, "dry_run": True, "to_region": home}
    t = _lab.resolve(configuration)
    t0 = time.monotonic()
    before = lab_shape(t, home)
    if before["ok"]:
        planes = _restore_planes(t, home, configuration)
        return {"changed": False, "shape": before, "reverted": _mark_all(configuration), "seconds": 0.0,
                **({"planes": planes} if planes else {})}
    _event(configuration, "failback_started", to_region=home, shape=before)
    steps: list[dict[str, Any]] = []
    kept_aside: dict[str, str] = {}

    def step(name: str, **data: Any) -> None:
        steps.append({"step": name, "at_s": round(time.monotonic() - t0, 3), **data})

    def rejoined(res: dict[str, Any], upstream: str) -> None:
        if res.get("kept_aside"):
            kept_aside[res["region"]] = res["kept_aside"]
        aside = {k: res[k] for k in ("kept_aside", "copy_seconds") if res.get(k) is not None}
        step("postgresql rejoined as standby", region=res["region"], how=res["how"], seconds=res["seconds"], **aside)
        if res["how"] != "already streaming":
            _event(configuration, "rejoined", component="postgresql", region=res["region"], upstream=upstream,
                   how=res["how"], **aside)

    data_check: dict[str, Any] = {}
    with t.http(timeout=5.0) as http:
        for node in t.nodes.values():
            if pg_ops.is_paused(node):
                pg_ops.signal_cluster(node, signal.SIGCONT)
                step(f"postgresql {node.region} resumed")
        if home == "primary" and t.has_inregion() and inregion.serving_node(t) == inregion.INREGION:
            res = inregion.fail_back_in_region(configuration)  # the Multi-AZ failover first: the primary node serves
            step("in-region failback", seconds=res["seconds"])
        try:
            current, why = _pg_current_primary(t, http, home)
        except HarnessError as e:
            _event(configuration, "failback_refused", to_region=home, reason=str(e))
            raise
        step("postgresql current primary", region=current, **why)
        if not before["proxies"]:
            toxiproxy.reset(http, t.toxiproxy_url)
            step("fault proxy reset")
        if current == away:
            # 1. the old primary follows DR and catches up; its Valkey syncs from DR's
            res = pg_ops.rejoin_as_standby(t.node(home), lambda: t.pg(home), t.node(away), lambda: t.pg(away),
                                           t.pg_stream_port(away, home))
            rejoined(res, away)
            pg_ops.wait_caught_up(lambda: t.pg(away), lambda: t.pg(home))
            app_ops.scale(http, t.supervisor_url, home, PRIMARY_REPLICAS)  # warm; healthy after the switchover
            with t.redis(away) as ac:
                if rd_ops.role(ac) != "master":
                    rd_ops.promote(ac)
            rd_actions.start_as_replica(t, home, away)
            step("valkey replica of dr", region=home)
            # 2. controlled switchover: writes stop in DR, DR shuts down cleanly, the old primary replays it all
            app_ops.scale(http, t.supervisor_url, away, 0)
            step("dr apps scaled to 0")
            with t.pg(away) as c:
                data_check["source"] = pg_ops.data_fingerprint(c)
                c.execute("CHECKPOINT")
            t.node(away).stop(mode="fast", timeout=30)
            _event(configuration, "stopped", component="postgresql", region=away, how="clean shutdown for the switchover")
            final_lsn = pg_ops.checkpoint_lsn(t.node(away))
            pg_ops.wait_replayed(lambda: t.pg(home), final_lsn)
            step("dr stopped cleanly, replayed", lsn=final_lsn)
            pg = pg_ops.promote(lambda: t.pg(home))
            step("postgresql promoted", region=home, seconds=pg["seconds"])
            _event(configuration, "promoted", component="postgresql", region=home, seconds=pg["seconds"])
            if router_ops.state(http, t.router_url)["mode"] != "auto":  # the runbook pinned DR: unpin now
                router_ops.clear_override(http, t.router_url)
                step("router back to automatic routing")
            with t.pg(home) as c:
                data_check["target"] = pg_ops.data_fingerprint(c)
                data_check["target_missing"] = pg_ops.missing_from(c, data_check["source"])
                data_check["target_holds_source"] = not data_check["target_missing"]
        # Valkey: home master, away replicating through the proxy (switchover when away holds the data)
        rd = rd_actions.make_master(t, home)
        step("valkey master", region=home, how=rd.get("how"))
        # PostgreSQL: away streams from home through the pg_replication proxy
        # (after the clean switchover above, home has replayed every WAL record of away: nothing to keep aside)
        res = pg_ops.rejoin_as_standby(t.node(away), lambda: t.pg(away), t.node(home), lambda: t.pg(home),
                                       t.pg_stream_port(home, away), keep_copy=current != away)
        rejoined(res, home)
        # apps and traffic
        app_ops.scale(http, t.supervisor_url, home, PRIMARY_REPLICAS)
        app_ops.scale(http, t.supervisor_url, away, 0)
        app_ops.wait_scaled(http, t.supervisor_url, home, PRIMARY_REPLICAS)
        app_ops.wait_scaled(http, t.supervisor_url, away, 0)
        flip = _wait_router(t, http, home)
        step("global endpoint serving", region=home, flip_at=flip.get("at"))
        # data written in DR is on the primary, and the standby has it all (writes may already flow again:
        # compare up to the keys seen, not totals)
        with t.pg(home) as c:
            data_check.setdefault("target", pg_ops.data_fingerprint(c))
            home_now = pg_ops.data_fingerprint(c)
        pg_ops.wait_caught_up(lambda: t.pg(home), lambda: t.pg(away))
        with t.pg(away) as c:
            data_check["standby"] = pg_ops.data_fingerprint(c)
            data_check["standby_missing"] = pg_ops.missing_from(c, home_now)
            data_check["standby_holds_primary"] = not data_check["standby_missing"]
    src = data_check.get("source")
    data_check["ok"] = (src is None or data_check.get("target_holds_source", False)) \
        and data_check["standby_holds_primary"]
    if not data_check["ok"]:
        raise HarnessError(f"failback lost data written in {away}: rows missing on {home} in "
                           f"{', '.join(data_check.get('target_missing') or []) or '-'}, on the standby in "
                           f"{', '.join(data_check['standby_missing']) or '-'} (data dirs before the rejoin: "
                           f"{', '.join(kept_aside.values()) or 'none'})")
    if home == "primary" and t.has_inregion():  # the in-region standby streams from the primary again
        res = inregion.fail_back_in_region(configuration)
        step("in-region standby", seconds=res["seconds"], changed=res["changed"])
    after = lab_shape(t, home)
    if not after["ok"]:
        raise LabError(f"failback finished but the lab is not in shape: "
                       f"{', '.join(k for k, v in after.items() if not v and k != 'ok')}")
    planes = _restore_planes(t, home, configuration)
    if planes:
        step("cloud APIs show the starting shape", **planes)
    seconds = round(time.monotonic() - t0, 3)
    reverted = _mark_all(configuration)
    _event(configuration, "failback_complete", to_region=home, seconds=seconds, data_check=data_check,
           kept_aside=kept_aside)
    return {"changed": True, "seconds": seconds, "steps": steps, "data_check": data_check, "shape": after,
            "reverted": reverted, "kept_aside": kept_aside}
