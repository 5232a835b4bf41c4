"""A lost region returns as the new standby of the region that serves (a rejoin, not a failback): its database
streams from the serving one, its Valkey replicates from it, its apps stay at 0, traffic stays where it is."""

from __future__ import annotations

import time
from typing import Any

from harness.errors import LabError
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab
from harness.targets.app import ops as app_ops
from harness.targets.postgres import ops as pg_ops
from harness.targets.redis import actions as rd_actions
from harness.targets.router import ops as router_ops

__all__ = ["rejoin_region"]


def _event(configuration: dict | None, kind: str, event: str, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.event(kind, event, **data)


def rejoin_region(region: str = "primary", catch_up_timeout_s: float = 60.0, configuration: dict | None = None,
                  secrets: dict | None = None) -> dict:
    """Region `region` comes back as the standby of the other region, which must be serving (its PostgreSQL the
    writable primary, the global endpoint routing to it): PostgreSQL rejoins (pg_rewind, its data dir kept aside
    first: writes it acknowledged but never shipped stay there) and catches up, Valkey restarts as a replica.

    Measured: how far the returning database was behind when it streamed again (bytes) and the seconds until it
    had replayed the serving primary's WAL position (taken after the rejoin, under whatever load runs). Refuses
    (LabError, nothing changed) unless the other region serves.
    """
    home = _lab.check_region(region)
    serving = _lab.other(home)
    if guard.is_dry_run(configuration):  # the region was not lost: nothing to rejoin
        _event(configuration, "failover", "planned", dry_run=True, step=f"rejoin {home} as the standby of {serving}")
        return {"dry_run": True, "region": home}
    t = _lab.resolve(configuration)
    t0 = time.monotonic()
    with t.http(timeout=3.0) as http:
        st = router_ops.state(http, t.router_url)
        if st["active_region"] != serving:
            raise LabError(f"refusing to rejoin {home} as a standby: the global endpoint routes to "
                           f"{st['active_region']}, not {serving}")
        if pg_ops.role(lambda: t.pg(serving)) != "primary":
            raise LabError(f"refusing to rejoin {home} as a standby: PostgreSQL {serving} is not a running primary")
        app_ops.scale(http, t.supervisor_url, home, 0)  # a standby region runs no apps (the lab's DR shape)
    pg_ops.wait_reaped(t.node(home))
    res = pg_ops.rejoin_as_standby(t.node(home), lambda: t.pg(home), t.node(serving), lambda: t.pg(serving),
                                   t.pg_stream_port(serving, home))
    _event(configuration, "failover", "rejoined", component="postgresql", region=home, upstream=serving,
           how=res["how"], seconds=res["seconds"], **({"kept_aside": res["kept_aside"]} if res.get("kept_aside") else {}))
    # how far behind it streams again: its replay position first, then the serving primary's (never negative)
    with t.pg(home) as sb, t.pg(serving) as p:
        replayed = sb.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
        target = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        behind = int(p.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint",
                               (target, replayed)).fetchone()[0] or 0)
    t_catch = time.monotonic()
    _lab.wait_for(lambda: _replayed_to(t, home, target), catch_up_timeout_s, f"{home} replayed up to {target}",
                  interval=0.05)
    caught_up_s = round(time.monotonic() - t_catch, 3)
    with t.pg(serving) as p, t.pg(home) as sb:
        lag = pg_ops.replay_delay(p, sb, limit_s=catch_up_timeout_s)
    rd = rd_actions.start_as_replica(t, home, serving)
    _event(configuration, "failover", "rejoined", component="redis", region=home, upstream=serving,
           started=rd["started"])
    out = {"region": home, "upstream": serving, "postgres": {k: v for k, v in res.items() if k != "region"},
           "behind_bytes_at_rejoin": behind, "target_lsn": target, "caught_up_s": caught_up_s,
           "replay_lag_s": None if lag[0] is None else round(lag[0], 3), "replay_lag": lag[1],
           "valkey": rd, "seconds": round(time.monotonic() - t0, 3)}
    ok = lag[0] is not None
    _event(configuration, "check", f"{home} region rejoined as the standby of {serving}", status="pass" if ok else "fail",
           **{k: v for k, v in out.items() if k != "postgres"}, how=res["how"])
    if not ok:
        raise LabError(f"{home} rejoined but does not replay {serving}'s commits: {lag[1]}")
    return out


def _replayed_to(t: _lab.LabTarget, region: str, lsn: str) -> bool:
    with t.pg(region, timeout=1) as c:
        return bool(c.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0])
