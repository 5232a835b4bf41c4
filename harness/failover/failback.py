"""Failback: bring the lab back to its starting shape (primary serving, DR streaming) without losing data written in DR."""

from __future__ import annotations

import signal
import time
from typing import Any

from harness.drill import guard
from harness.drill import session as drill_session
from harness.errors import HarnessError, LabError
from harness.lab.manager import PRIMARY_REPLICAS
from harness.targets import _lab, toxiproxy
from harness.targets.app import ops as app_ops
from harness.targets.postgres import ops as pg_ops
from harness.targets.redis import actions as rd_actions
from harness.targets.redis import ops as rd_ops
from harness.targets.router import ops as router_ops

__all__ = ["fail_back", "lab_in_shape"]

#: faults whose effects fail_back undoes; their ledger entries are marked reverted by it
COVERED_FAULTS = ("fail_region", "kill_primary", "stop_primary", "pause_primary", "promote_standby",
                  "promote_replica", "cut_replication", "switch_region", "scale_region", "kill_replica")


def _event(event: str, **data: Any) -> None:
    s = drill_session.current(required=False)
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
    shape["not_paused"] = not any(pg_ops.is_paused(n) for n in t.nodes.values())
    shape["ok"] = all(shape.values())
    return shape


def lab_in_shape(to_region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Probe: is the lab in its starting shape with `to_region` serving? ("ok" plus one boolean per aspect)."""
    return lab_shape(_lab.resolve(configuration), _lab.check_region(to_region))


def _pg_current_primary(t: _lab.LabTarget, home: str) -> str:
    """The region whose PostgreSQL holds the newest data and serves writes (starting one if none does)."""
    away = _lab.other(home)
    roles = {r: pg_ops.role(lambda r=r: t.pg(r)) for r in (home, away)}
    primaries = [r for r, v in roles.items() if v == "primary"]
    if len(primaries) == 1:
        return primaries[0]
    if len(primaries) == 2:  # split brain: the later timeline was promoted last and served last
        tl = {}
        for r in primaries:
            with t.pg(r) as c:
                tl[r] = pg_ops.timeline_id(c)
        return away if tl[away] > tl[home] else home
    # nobody writable: restart the node that was a primary (no standby.signal), else promote a standby
    for r in (home, away):
        node = t.node(r)
        if roles[r] == "down" and not (node.data_dir / "standby.signal").exists():
            pg_ops.wait_reaped(node)
            node.start()
            return r
    for r in (away, home):
        if roles[r] == "standby":
            pg_ops.promote(lambda r=r: t.pg(r))
            return r
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
            s = drill_session.current(required=False)
            if s is not None:
                s.event("fault", e.fault, phase="revert", fault_id=e.id, target=e.target, how="fail_back")
    return ids


def fail_back(to_region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Restore the starting shape with `to_region` serving (idempotent; nothing to do when already in shape).

    PostgreSQL: the old primary rejoins DR as a standby (pg_rewind), catches up, DR's apps stop, DR shuts
    down cleanly, the old primary replays everything and is promoted, DR rejoins as a standby through the
    pg_replication proxy. Valkey likewise (switchover). Apps primary=2, dr=0; router back to automatic on
    `to_region`; fault proxy reset. Ends with a voucher count check and the failover event "failback_complete".
    """
    home = _lab.check_region(to_region)
    away = _lab.other(home)
    t = _lab.resolve(configuration)
    t0 = time.monotonic()
    before = lab_shape(t, home)
    if before["ok"]:
        return {"changed": False, "shape": before, "reverted": _mark_all(configuration), "seconds": 0.0}
    _event("failback_started", to_region=home, shape=before)
    steps: list[dict[str, Any]] = []

    def step(name: str, **data: Any) -> None:
        steps.append({"step": name, "at_s": round(time.monotonic() - t0, 3), **data})

    data_check: dict[str, Any] = {}
    with t.http(timeout=5.0) as http:
        if not before["proxies"]:
            toxiproxy.reset(http, t.toxiproxy_url)
            step("fault proxy reset")
        for node in t.nodes.values():
            if pg_ops.is_paused(node):
                pg_ops.signal_cluster(node, signal.SIGCONT)
                step(f"postgresql {node.region} resumed")
        current = _pg_current_primary(t, home)
        step("postgresql current primary", region=current)
        if current == away:
            # 1. the old primary follows DR and catches up; its Valkey syncs from DR's
            res = pg_ops.rejoin_as_standby(t.node(home), lambda: t.pg(home), t.node(away), lambda: t.pg(away),
                                           t.pg_stream_port(away, home))
            step("postgresql rejoined as standby", region=home, how=res["how"])
            _event("rejoined", component="postgresql", region=home, upstream=away, how=res["how"])
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
                data_check["source"] = pg_ops.voucher_fingerprint(c)
                c.execute("CHECKPOINT")
            t.node(away).stop(mode="fast", timeout=30)
            final_lsn = pg_ops.checkpoint_lsn(t.node(away))
            pg_ops.wait_replayed(lambda: t.pg(home), final_lsn)
            step("dr stopped cleanly, replayed", lsn=final_lsn)
            pg = pg_ops.promote(lambda: t.pg(home))
            step("postgresql promoted", region=home, seconds=pg["seconds"])
            _event("promoted", component="postgresql", region=home, seconds=pg["seconds"])
            with t.pg(home) as c:
                data_check["target"] = pg_ops.voucher_fingerprint(c)
                data_check["target_holds_source"] = pg_ops.holds_all_of(c, data_check["source"])
        # Valkey: home master, away replicating through the proxy (switchover when away holds the data)
        rd = rd_actions.make_master(t, home)
        step("valkey master", region=home, how=rd.get("how"))
        # PostgreSQL: away streams from home through the pg_replication proxy
        res = pg_ops.rejoin_as_standby(t.node(away), lambda: t.pg(away), t.node(home), lambda: t.pg(home),
                                       t.pg_stream_port(home, away))
        step("postgresql standby streaming", region=away, how=res["how"])
        if res["how"] != "already streaming":
            _event("rejoined", component="postgresql", region=away, upstream=home, how=res["how"])
        # apps and traffic
        app_ops.scale(http, t.supervisor_url, home, PRIMARY_REPLICAS)
        app_ops.scale(http, t.supervisor_url, away, 0)
        app_ops.wait_scaled(http, t.supervisor_url, home, PRIMARY_REPLICAS)
        app_ops.wait_scaled(http, t.supervisor_url, away, 0)
        flip = _wait_router(t, http, home)
        step("global endpoint serving", region=home, flip_at=flip.get("at"))
        # data written in DR is on the primary, and the standby has it all (writes may already flow again:
        # compare by id range, not by totals)
        with t.pg(home) as c:
            data_check.setdefault("target", pg_ops.voucher_fingerprint(c))
            home_now = pg_ops.voucher_fingerprint(c)
        pg_ops.wait_caught_up(lambda: t.pg(home), lambda: t.pg(away))
        with t.pg(away) as c:
            data_check["standby"] = pg_ops.voucher_fingerprint(c)
            data_check["standby_holds_primary"] = pg_ops.holds_all_of(c, home_now)
    src = data_check.get("source")
    data_check["ok"] = (src is None or data_check.get("target_holds_source", False)) \
        and data_check["standby_holds_primary"]
    if not data_check["ok"]:
        raise HarnessError(f"failback lost data written in {away}: {data_check}")
    after = lab_shape(t, home)
    if not after["ok"]:
        raise LabError(f"failback finished but the lab is not in shape: "
                       f"{', '.join(k for k, v in after.items() if not v and k != 'ok')}")
    seconds = round(time.monotonic() - t0, 3)
    reverted = _mark_all(configuration)
    _event("failback_complete", to_region=home, seconds=seconds, data_check=data_check)
    return {"changed": True, "seconds": seconds, "steps": steps, "data_check": data_check, "shape": after,
            "reverted": reverted}
