"""A network partition between the regions as one fault, and the split-brain guard the runbook must hold during it.

The lab's regions talk to each other only over the replication links (PostgreSQL WAL stream, Valkey replica link,
both through the fault proxy); cutting both is what the DR region sees of a partition: the primary is gone from
its view while the primary region itself, its clients and the global endpoint are untouched.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.errors import HarnessError, LabError, SafetyRefusal
from harness.failover import runbook
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab, toxiproxy
from harness.targets.postgres import ops as pg_ops
from harness.targets.redis import ops as rd_ops

__all__ = ["REPLICATION_LINKS", "RoleSampler", "heal_partition", "partition_regions", "refuse_split_brain"]

#: the fault proxies that carry every byte between the regions
REPLICATION_LINKS = ("pg_replication", "redis_replication")
TARGET = "regions:primary|dr"


def _event(configuration: dict | None, kind: str, event: str, **data: Any) -> None:
    s = run_context.of(configuration)
    if s is not None:
        s.event(kind, event, **data)


def partition_regions(configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Cut the network between the regions: both replication links disabled (live connections dropped), both regions
    left running. One fault; rollback: heal_partition."""
    inj = guard.inject("partition_regions", TARGET, revert=(heal_partition, {}), regions=("primary", "dr"),
                       components=REPLICATION_LINKS, configuration=configuration,
                       details={"links": list(REPLICATION_LINKS)})
    if not inj.proceed:
        return inj.to_dict()
    t = _lab.resolve(configuration)
    with t.http() as http:
        for name in REPLICATION_LINKS:
            toxiproxy.set_enabled(http, t.toxiproxy_url, name, False)
    return {"links": list(REPLICATION_LINKS), "cut": True, "fault_id": inj.entry.id}


def heal_partition(catch_up_timeout_s: float = 30.0, configuration: dict | None = None,
                   secrets: dict | None = None) -> dict:
    """Enable both replication links again (idempotent) and measure how replication resumes: the seconds until the
    standby streams again and has replayed the primary's WAL position at the heal, the bytes it was behind then,
    and the seconds until the Valkey replica's link is up."""
    t = _lab.resolve(configuration)
    out: dict[str, Any] = {"links": list(REPLICATION_LINKS)}
    with t.http() as http:
        cut = [n for n in REPLICATION_LINKS if not toxiproxy.proxy(http, t.toxiproxy_url, n).get("enabled")]
    if not cut:  # nothing to heal (a rollback after the method healed it): no measurement
        out.update(healed=False, reverted=guard.mark_reverted("partition_regions", TARGET, configuration))
        return out
    out["healed"] = True
    # how far the standby is behind, read before the links carry anything again
    primary = next((r for r in _lab.REGIONS if pg_ops.role(lambda r=r: t.pg(r)) == "primary"), None)
    standby = _lab.other(primary) if primary else None
    target, behind = None, None
    if primary is not None and pg_ops.role(lambda: t.pg(standby)) == "standby":
        with t.pg(primary) as p:
            target = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        with t.pg(standby) as sb:
            behind = int(sb.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint",
                                    (target,)).fetchone()[0] or 0)
    with t.http() as http:
        for name in REPLICATION_LINKS:
            toxiproxy.set_enabled(http, t.toxiproxy_url, name, True)
    t0 = time.monotonic()
    out["reverted"] = guard.mark_reverted("partition_regions", TARGET, configuration)
    if target is None:
        out["resumed"] = False
        out["why"] = "no PostgreSQL primary with a standby to stream to"
        return out
    port = t.pg_stream_port(primary, standby)

    def replayed() -> bool:
        with t.pg(standby, timeout=1) as c:
            return pg_ops.streaming_from(c, port) and bool(c.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0])

    _lab.wait_for(replayed, catch_up_timeout_s, f"PostgreSQL {standby} streaming and replayed up to {target}",
                  interval=0.05)
    out.update(resumed=True, primary=primary, standby=standby, behind_bytes=behind, target_lsn=target,
               postgres_caught_up_s=round(time.monotonic() - t0, 3))

    def linked() -> bool:
        with t.redis(standby, timeout=1) as c:
            return rd_ops.linked(c, t.redis_link_port(primary, standby))

    _lab.wait_for(linked, catch_up_timeout_s, f"Valkey {standby} linked to {primary} again", interval=0.05)
    out["valkey_linked_s"] = round(time.monotonic() - t0, 3)
    _event(configuration, "check", "replication resumed after the partition", status="pass",
           **{k: v for k, v in out.items() if k != "reverted"})
    return out


class RoleSampler:
    """Samples both regions' PostgreSQL every `interval_s`: answering, in recovery, writable (not in recovery and
    not read-only). Two writable at the same sample is a split brain."""

    def __init__(self, t: _lab.LabTarget, interval_s: float = 0.2) -> None:
        self.t, self.interval_s = t, interval_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-role-sampler", daemon=True)

    def _role(self, region: str) -> str:
        def one() -> str:
            with self.t.pg(region, timeout=1) as c:
                if pg_ops.in_recovery(c):
                    return "standby"
                ro = c.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
                return "read-only" if ro else "writable"
        return _lab.quiet(one, "down") or "down"

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append({"t": time.time(), **{r: self._role(r) for r in _lab.REGIONS}})
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RoleSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def both_writable(self) -> list[dict[str, Any]]:
        return [x for x in self.samples if all(x[r] == "writable" for r in _lab.REGIONS)]

    def summary(self) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = {r: {} for r in _lab.REGIONS}
        for x in self.samples:
            for r in _lab.REGIONS:
                counts[r][x[r]] = counts[r].get(x[r], 0) + 1
        return {"samples": len(self.samples), "roles": counts, "both_writable": len(self.both_writable())}


def refuse_split_brain(window_s: float = 4.0, detect_timeout_s: float = 3.0, configuration: dict | None = None,
                       secrets: dict | None = None) -> dict:
    """During a partition: the runbook is asked to fail over to the DR region and must refuse, because the primary
    region still serves (its database writable, the global endpoint healthy); both databases are sampled for
    `window_s` meanwhile and must never both be writable, and the DR database must stay a standby.

    HarnessError when the runbook failed over anyway (its own fencing then ran; the rollback fail_back keeps the
    region that took writes) or a sample saw two writable primaries. The evidence is a `check` event either way.
    """
    if guard.is_dry_run(configuration):  # no partition was made: the runbook has nothing to refuse
        _event(configuration, "failover", "planned", dry_run=True, step="ask the runbook to fail over (split brain refusal not judged)")
        return {"dry_run": True}
    t = _lab.resolve(configuration)
    t0 = time.monotonic()
    refusal: str | None = None
    failed_over: dict[str, Any] | None = None
    with RoleSampler(t) as sampler:
        try:
            failed_over = runbook.fail_over(to_region="dr", detect_timeout_s=detect_timeout_s,
                                            configuration=configuration)
        except (SafetyRefusal, LabError):
            raise  # not the runbook's judgement of the partition: the drill could not ask it
        except HarnessError as e:
            refusal = str(e)
        rest = window_s - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)
    summary = sampler.summary()
    dr_promoted = summary["roles"]["dr"].get("writable", 0) + summary["roles"]["dr"].get("read-only", 0)
    ok = refusal is not None and failed_over is None and summary["both_writable"] == 0 and dr_promoted == 0 \
        and summary["samples"] > 0
    out = {"refused": refusal is not None, "refusal": refusal, "window_s": round(time.monotonic() - t0, 3),
           "roles": summary, "dr_promoted_samples": dr_promoted}
    if failed_over is not None:
        out["failed_over"] = {k: failed_over.get(k) for k in ("to_region", "since_fault_s", "fence")}
    _event(configuration, "check", "split brain refused during the partition", status="pass" if ok else "fail",
           **out)
    if not ok:
        why = ("the runbook failed over to dr while the primary region served" if failed_over is not None else
               f"{summary['both_writable']} sample(s) saw both regions writable" if summary["both_writable"] else
               f"the DR database left recovery in {dr_promoted} sample(s)" if dr_promoted else
               "no role sample was taken")
        raise HarnessError(f"split brain not refused during the partition: {why}")
    return out
