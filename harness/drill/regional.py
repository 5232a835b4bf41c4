"""Drill activities of the region-level catalog scenarios: the lag a held WAL stream builds, the DR region running
alone, where each acknowledged voucher was written, and where the writes a failover lost are kept."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from harness.drill import session as drill_session
from harness.errors import HarnessError
from harness.failover.failback import lab_shape
from harness.lab import procs, recovered
from harness.lab.postgres import PgNode
from harness.targets import _lab
from harness.targets.app import ops as app_ops
from harness.targets.postgres import data_faults
from harness.targets.postgres import ops as pg_ops
from harness.targets.router import ops as router_ops

__all__ = ["acknowledged_by_region", "await_replicated_baseline", "check_kept_aside", "lost_vouchers", "measure_replica_behind", "run_alone",
           "require_lab_as_found", "writes_served_by_one_region"]


def _acked(s, since: float | None = None, until: float | None = None) -> list[Any]:
    """The run's acknowledged voucher writes (ops f=write, ok), optionally in [since, until)."""
    return [o for o in s.timeline.ops if o.f == "write" and o.type == "ok"
            and (since is None or o.t >= since) and (until is None or o.t < until)]


def acknowledged_by_region(s, since: float | None = None, until: float | None = None) -> dict[str, int]:
    """How many acknowledged vouchers each region's app served (the app's X-Drill-Region answer)."""
    out: dict[str, int] = {}
    for o in _acked(s, since, until):
        region = str((o.value or {}).get("region") or "unknown")
        out[region] = out.get(region, 0) + 1
    return out


def lost_vouchers(s) -> list[str]:
    """Request ids of acknowledged vouchers the final read did not find (the run's final read is needed)."""
    if s.final_keys is None:
        raise HarnessError("no final read in this run: stop the workload first")
    return sorted({o.key for o in _acked(s)} - set(s.final_keys))


@drill_session.judged_only_after_a_fault({"dry_run": True})
def measure_replica_behind(min_behind_bytes: int = 1, configuration: dict | None = None,
                           secrets: dict | None = None) -> dict:
    """How far the DR standby is behind the primary now, measured on both: the primary's WAL position against what
    the standby received and replayed (bytes), and the age of the standby's last replayed transaction (seconds);
    plus the vouchers acknowledged since the run's first fault. The scenario's precondition (the replica lags):
    HarnessError when the standby is less than `min_behind_bytes` behind."""
    s = drill_session.current()
    t = _lab.resolve(configuration)
    with t.pg("primary", timeout=2) as p:
        current = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    with t.pg("dr", timeout=2) as sb:
        row = sb.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_receive_lsn())::bigint, "
                         "pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint, "
                         "extract(epoch from now() - pg_last_xact_replay_timestamp())::float8",
                         (current, current)).fetchone()
    not_received, not_replayed, age = int(row[0] or 0), int(row[1] or 0), row[2]
    acked = len(_acked(s, since=s.fault_t)) if s.fault_t else 0
    ok = not_received >= min_behind_bytes
    out = {"primary_lsn": current, "not_received_bytes": not_received, "not_replayed_bytes": not_replayed,
           "last_replayed_age_s": None if age is None else round(float(age), 3),
           "acknowledged_since_fault": acked, "ok": ok}
    s.event("check", "DR standby behind the primary", status="pass" if ok else "fail", **out)
    if not ok:
        raise HarnessError(f"the DR standby is not behind: {not_received} bytes not received "
                           f"(want at least {min_behind_bytes}); the scenario needs a lagging replica")
    return out


@drill_session.judged_only_after_a_fault({"dry_run": True})
def run_alone(seconds: float = 5.0, region: str = "dr", configuration: dict | None = None,
              secrets: dict | None = None) -> dict:
    """The region `region` runs alone for `seconds`: the other region stays down (its PostgreSQL and Valkey not
    answering, no app running), the global endpoint routes to `region`, and the workload's writes are served there.
    Measured: vouchers acknowledged per region in the window, probes ok / failed, the other region's state at the
    start and at the end. HarnessError when the other region came back or `region` served no write."""
    s = drill_session.current()
    t = _lab.resolve(configuration)
    away = _lab.other(_lab.check_region(region))

    def away_state() -> dict[str, Any]:
        with t.http(timeout=2.0) as http:
            st = app_ops.regions(http, t.supervisor_url)
            active = router_ops.state(http, t.router_url)["active_region"]
        return {"postgresql": pg_ops.role(lambda: t.pg(away, timeout=1)),
                "valkey": "down" if t.lab.valkey_pid(away) is None else "running",
                "apps": len(app_ops.alive_replicas(st, away)), "active_region": active}

    before = away_state()
    t0 = time.time()
    time.sleep(float(seconds))
    t1 = time.time()
    after = away_state()
    served = acknowledged_by_region(s, t0, t1)
    probes = [e for e in s.timeline.of_kind("probe") if t0 <= e.t < t1]
    ok_probes = sum(1 for e in probes if e.data.get("ok"))
    down = all(x["postgresql"] == "down" and x["valkey"] == "down" and x["apps"] == 0 and x["active_region"] == region
               for x in (before, after))
    ok = down and served.get(region, 0) > 0 and set(served) <= {region}
    out = {"region": region, "seconds": round(t1 - t0, 3), "acknowledged_by_region": served,
           "write_rate_per_s": round(served.get(region, 0) / max(t1 - t0, 1e-9), 1),
           "probes": len(probes), "probes_ok": ok_probes, "other_region_before": before, "other_region_after": after}
    s.event("check", f"{region} region ran alone", status="pass" if ok else "fail", **out)
    if not ok:
        why = (f"{away} region was not down throughout ({before} -> {after})" if not down else
               f"acknowledged writes by region {served}")
        raise HarnessError(f"{region} region did not run alone for {seconds:.0f} s: {why}")
    return out


def writes_served_by_one_region(region: str = "primary", configuration: dict | None = None,
                                secrets: dict | None = None) -> dict:
    """Every voucher the run acknowledged was written through `region`'s apps (none through the other region's):
    no write was accepted on both sides. Needs the final read (stop_workload): every acknowledged voucher is also
    on the primary (none lost). HarnessError otherwise."""
    s = drill_session.current()
    served = acknowledged_by_region(s)
    lost = lost_vouchers(s)
    ok = set(served) == {region} and not lost
    out = {"region": region, "acknowledged_by_region": served, "lost": len(lost), "lost_sample": lost[:10]}
    s.event("check", f"every acknowledged voucher written in the {region} region", status="pass" if ok else "fail",
            **out)
    if not ok:
        raise HarnessError(f"acknowledged vouchers by region {served}, {len(lost)} lost: writes were not all taken "
                           f"by the {region} region alone")
    return out


def check_kept_aside(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """After a failover that lost acknowledged writes and the failback: the lost vouchers are not dropped silently.

    The failback rewound `region`'s old data dir only after copying it to `<data_dir>.before-rejoin`. That copy is
    copied once more into a new, scratch server (free port, recorded like a recovered server, discarded at the end;
    the copy kept aside is never started or changed), which runs crash recovery over the WAL the old primary
    acknowledged; the lost request ids are looked up there and on the current primary. HarnessError when a lost
    voucher is in neither (dropped); the counts are a `check` event and a note of the report.
    """
    s = drill_session.current()
    lost = lost_vouchers(s)
    t = _lab.resolve(configuration)
    node = t.node(_lab.check_region(region))
    aside = node.aside_dir
    out: dict[str, Any] = {"lost": len(lost), "kept_aside": str(aside)}
    if not lost:
        out.update(in_kept_aside=0, on_primary=0, dropped=0)
        s.event("check", "lost writes kept aside", status="pass", **out)
        return out
    if not (aside / "PG_VERSION").exists():
        s.event("check", "lost writes kept aside", status="fail", **out, why="no copy kept aside")
        raise HarnessError(f"{len(lost)} acknowledged voucher(s) lost and no copy of {region}'s old data dir at {aside}")
    found = _count_in_copy(t, aside, lost)
    with t.pg_node(data_faults.live_primary_node(t)) as c:  # any node (after a Multi-AZ failover: primary_c)
        on_primary = int(c.execute("SELECT count(*) FROM vouchers WHERE request_id = ANY(%s)", (lost,)).fetchone()[0])
    dropped = len(lost) - found["in_copy"] - on_primary
    out.update(in_kept_aside=found["in_copy"], on_primary=on_primary, dropped=max(dropped, 0),
               copy_seconds=found["seconds"])
    ok = dropped <= 0
    s.event("check", "lost writes kept aside", status="pass" if ok else "fail", **out)
    s.note(f"{len(lost)} acknowledged voucher(s) the failover lost are not on the primary after the failback "
           f"({on_primary} are); {found['in_copy']} of them are in the old primary's data dir kept aside at {aside} "
           "(reconcile from there by hand; the drill does not re-apply them)")
    if not ok:
        raise HarnessError(f"{dropped} lost acknowledged voucher(s) are neither on the primary nor in the copy kept "
                           f"aside at {aside}: dropped")
    return out


def _count_in_copy(t: _lab.LabTarget, aside: Path, keys: list[str]) -> dict[str, Any]:
    """Start a scratch server on a copy of `aside` and count the vouchers with request id in `keys` there."""
    t0 = time.monotonic()
    lab = t.lab
    rt = lab.pg_runtime()
    root = Path(lab.server_root)
    name = f"kept-aside-{uuid.uuid4().hex[:8]}"
    port = procs.free_ports(1)[0]
    node = PgNode(f"recovered {name}", root / name, port, root / "logs" / f"{name}.log", rt)
    recovered.record(lab.state, name, {"kind": "postgres", "name": name, "port": port, "data_dir": str(node.data_dir),
                                       "log_file": str(node.log_file), "copy_of": str(aside)})
    try:
        shutil.rmtree(node.data_dir, ignore_errors=True)
        shutil.copytree(aside, node.data_dir, symlinks=True)
        for stale in ("postmaster.pid", "standby.signal", "recovery.signal"):
            (node.data_dir / stale).unlink(missing_ok=True)
        node.log_file.parent.mkdir(parents=True, exist_ok=True)
        node.log_file.touch()
        _chown_tree(rt, node.data_dir)
        rt.chown(node.log_file)
        node.write_config(primary_conninfo=None)  # its own port and socket, no archiving, no upstream
        node.start(timeout=60)
        with _lab.pg_connect(node.dsn, timeout=5) as c:
            n = int(c.execute("SELECT count(*) FROM vouchers WHERE request_id = ANY(%s)", (keys,)).fetchone()[0])
    finally:
        recovered.stop(lab.state, name, rt)
    return {"in_copy": n, "seconds": round(time.monotonic() - t0, 3)}


def _chown_tree(rt: Any, path: Path) -> None:
    rt.chown(path)
    for p in path.rglob("*"):
        rt.chown(p)



def require_lab_as_found(region: str = "primary", configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """The lab is in its starting shape with `region` serving (both databases and caches in their roles, the standby
    streaming, apps, router automatic, fault proxy clean), without repairing anything. HarnessError naming what is
    not; a `check` event either way."""
    s = drill_session.current()
    shape = lab_shape(_lab.resolve(configuration), _lab.check_region(region))
    s.event("check", "lab as found", status="pass" if shape["ok"] else "fail", **shape)
    if not shape["ok"]:
        raise HarnessError("the lab is not as it was found: " + ", ".join(k for k, v in shape.items()
                                                                          if not v and k != "ok"))
    return shape


#: the data sets the workload acknowledges: voucher writes, tax invoices, login sessions (ops f)
DATA_SETS = ("write", "invoice", "session")


def await_replicated_baseline(timeout_s: float = 60.0, configuration: dict | None = None,
                              secrets: dict | None = None) -> dict:
    """Before a fault that holds replication: every data set of the workload has an acknowledged record, and the DR
    standby has replayed the primary's WAL up to now, so each RPO has a surviving record to count from (without
    one, a set whose every acknowledged record was lost only has a lower bound). HarnessError on timeout."""
    s = drill_session.current()
    t = _lab.resolve(configuration)
    t0 = time.monotonic()

    def acknowledged() -> bool:
        seen = {o.f for o in s.timeline.ops if o.type == "ok"}
        return all(f in seen for f in DATA_SETS)

    _lab.wait_for(acknowledged, timeout_s, f"an acknowledged record of every data set ({', '.join(DATA_SETS)})")
    lsn = pg_ops.wait_caught_up(lambda: t.pg("primary"), lambda: t.pg("dr"),
                                timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
    out = {"data_sets": list(DATA_SETS), "replayed_up_to": lsn, "seconds": round(time.monotonic() - t0, 3)}
    s.event("check", "replicated baseline of every data set", status="pass", **out)
    return out
