"""`drill calibrate`: self-test of the meters (ledger + RPO, probe latency, integrity) against known, injected faults."""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.checks import integrity, plant
from harness.core import measure
from harness.core.timeline import Op, Timeline, iso
from harness.drill import session as drill_session
from harness.errors import HarnessError, Interrupted, LabError, UsageError
from harness.failover.failback import fail_back, lab_shape
from harness.lab import procs
from harness.lab.manager import Lab
from harness.safety import context as run_context
from harness.safety import guard
from harness.targets import _lab
from harness.targets.app import actions as app_actions
from harness.targets.app import ops as app_ops
from harness.targets.postgres import actions as pg_actions
from harness.targets.postgres import ops as pg_ops
from harness.targets.redis import actions as rd_actions
from harness.targets.redis import ops as rd_ops
from harness.targets.router import ops as router_ops
from harness.workload import Workload, final_read, find_primary_dsn
from harness.workload.ledger import OUTCOME_HEADER, REGION_HEADER, classify, describe, error_kind

__all__ = ["DEFAULT_KS", "calibrate", "drop_scratch_database", "remove_latency_toxic"]

DEFAULT_KS = (0, 1, 37)
DEFAULT_DELAY_MS = 200
MAX_K = 10_000
MAX_DELAY_MS = 1500  # the app gives Popbill 2 s; a larger delay would turn every invoice into a 502
RPO_TOLERANCE_S = 0.001
DELAY_TOLERANCE = 0.20
ANCHORS = 3
WRITE_TIMEOUT_S = 2.0
POPBILL_PROXY = "popbill"
TOXIC_NAME = "drill_calibrate_latency"
DELAY_SERVICE = "tax-invoice-service"
PROBE_INTERVAL_S = 0.1
WARMUP_S = 0.5
DR_REPLICAS = 2
SWITCH_TIMEOUT_S = 30.0
SHAPE_TIMEOUT_S = 30.0
REAP_TIMEOUT_S = 15.0
SOURCE_DB = "kerp"
LOSS_FAULT = "calibration_known_loss"  # ledger entry covering one known-loss cycle; reverted by fail_back
LOSS_TARGET = "lab:primary"

Progress = Callable[[str], None]


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# -- input ----------------------------------------------------------------------------------------
def check_inputs(ks: Any, delay_ms: Any) -> tuple[tuple[int, ...], int]:
    """Validated K values (deduplicated, in the given order) and delay; UsageError naming the bad value."""
    out: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_K:
            raise UsageError(f"--k {k!r} must be an integer in 0..{MAX_K}")
        if k not in out:
            out.append(k)
    if not out:
        raise UsageError("at least one --k value is needed")
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 1 <= delay_ms <= MAX_DELAY_MS:
        raise UsageError(f"--delay-ms {delay_ms!r} must be an integer in 1..{MAX_DELAY_MS}")
    return tuple(out), delay_ms


# -- reverts written to the fault ledger (importable, idempotent) ---------------------------------
def remove_latency_toxic(proxy: str = POPBILL_PROXY, toxic: str = TOXIC_NAME, configuration: dict | None = None,
                         secrets: dict | None = None) -> dict:
    """Remove the calibration's latency toxic from fault proxy `proxy` (idempotent)."""
    t = _lab.resolve(configuration)
    with t.http() as http:
        r = http.delete(f"{t.toxiproxy_url}/proxies/{proxy}/toxics/{toxic}")
    if r.status_code not in (204, 200, 404):
        raise LabError(f"fault proxy refused removing toxic {toxic!r} of {proxy!r}: HTTP {r.status_code} "
                       f"{r.text.strip()[:200]}")
    return {"proxy": proxy, "toxic": toxic, "removed": r.status_code != 404,
            "reverted": guard.mark_reverted("latency_toxic", f"toxiproxy:{proxy}", configuration)}


def drop_scratch_database(name: str, configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Drop the calibration's scratch database `name` wherever PostgreSQL is writable (idempotent)."""
    from psycopg import sql

    if not name.startswith("drill_calibrate_"):
        raise UsageError(f"refusing to drop {name!r}: not a calibration scratch database")
    t = _lab.resolve(configuration)
    dropped = []
    for region in _lab.REGIONS:
        if pg_ops.role(lambda r=region: t.pg(r)) != "primary":
            continue
        with _lab.pg_connect(t.node(region).admin_dsn()) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        dropped.append(region)
    return {"database": name, "dropped_in": dropped,
            "reverted": guard.mark_reverted("scratch_database", f"postgres:{name}", configuration)}


# -- the calibration run --------------------------------------------------------------------------
class _Run:
    """State of one calibration: the lab, its configuration, the session timeline, the faults to roll back."""

    def __init__(self, lab: Any, session: drill_session.DrillSession, progress: Progress,
                 signals: drill_session.SignalShield) -> None:
        self.lab = lab
        self.cfg: dict[str, Any] = {"drill_state_dir": str(lab.state), run_context.RUN_ID_KEY: session.run_id}
        self.t = _lab.resolve(self.cfg)
        self.session = session
        self.tl: Timeline = session.timeline
        self.signals = signals
        self._progress = progress
        self.t0 = time.monotonic()
        # what is injected right now (rolled back by `undo`)
        self.toxic = False
        self.replication_cut = False
        self.failed_over = False
        self.scratch_db: str | None = None
        self.killed_pid: int | None = None

    def wait_reaped(self, timeout: float = REAP_TIMEOUT_S) -> None:
        """Wait until the SIGKILLed postmaster is reaped by init (seconds here).

        Work-around: until then its pid still exists, and a restart of that node fails on the socket lock
        file (`sock-pg-primary/.s.PGSQL.<port>.lock` names the dead pid); `PgNode._wait_reaped` only looks at
        postmaster.pid, which pg_rewind / a base backup have replaced by then, so fail_back's rejoin breaks.
        """
        pid, self.killed_pid = self.killed_pid, None
        if not pid:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            if procs.alive(pid):
                return  # a live (not zombie) process: the pid was reused, nothing to wait for
            time.sleep(0.05)
        self.say(f"the killed postmaster (pid {pid}) was not reaped within {timeout:.0f} s")

    def say(self, msg: str) -> None:
        self._progress(f"{time.monotonic() - self.t0:7.1f}s  {msg}")

    def undo(self) -> list[str]:
        """Roll back whatever is injected (signals deferred meanwhile); returns what was done."""
        done: list[str] = []
        errors: list[str] = []
        with self.signals.shielded():
            if self.toxic:
                try:
                    remove_latency_toxic(configuration=self.cfg)
                    self.toxic = False
                    done.append("latency toxic removed")
                except Exception as e:  # keep going: the other reverts must still run
                    errors.append(f"removing the latency toxic: {e}")
            if self.scratch_db:
                try:
                    drop_scratch_database(self.scratch_db, configuration=self.cfg)
                    done.append(f"scratch database {self.scratch_db} dropped")
                    self.scratch_db = None
                except Exception as e:
                    errors.append(f"dropping scratch database {self.scratch_db}: {e}")
            if self.failed_over:
                try:
                    self.say("rollback: failing back to primary")
                    self.wait_reaped()
                    fb = fail_back("primary", configuration=self.cfg)
                    guard.mark_reverted(LOSS_FAULT, LOSS_TARGET, self.cfg, how="fail_back")
                    self.failed_over = self.replication_cut = False
                    done.append(f"failed back ({fb.get('seconds', 0)} s)")
                except Exception as e:
                    errors.append(f"fail_back: {e}")
            if self.replication_cut:
                try:
                    pg_actions.restore_replication(configuration=self.cfg)
                    self.replication_cut = False
                    done.append("replication restored")
                except Exception as e:
                    errors.append(f"restoring replication: {e}")
        if errors:
            raise HarnessError(f"calibration rollback incomplete ({'; '.join(errors)}); run `drill recover "
                               f"--state-dir {self.lab.state}`")
        self.signals.raise_pending()
        return done


def _preflight(run: _Run) -> None:
    """The lab must be in its starting shape on primary with no fault left in the ledger."""
    guard.ledger(run.cfg).refuse_if_active(doing="not calibrating")
    deadline = time.monotonic() + SHAPE_TIMEOUT_S
    while True:
        shape = lab_shape(run.t, "primary")
        if shape["ok"]:
            return
        if time.monotonic() > deadline:
            bad = ", ".join(k for k, v in shape.items() if not v and k != "ok")
            raise LabError(f"not calibrating: the lab is not in its starting shape on primary ({bad})")
        time.sleep(0.5)


# -- (a) known loss -------------------------------------------------------------------------------
def _write_acked(run: _Run, http: Any, writer: Any, keys: Iterator[str], n: int) -> list[Op]:
    """Write until `n` vouchers are acknowledged (non-acknowledged ones are retried with new keys), recording
    every operation as the ledger writers do; returns the `ok` operations."""
    url = f"{writer.base_url}/vouchers"
    acks: list[Op] = []
    attempts = 0
    budget = 3 * n + 20
    while len(acks) < n:
        if attempts >= budget:
            raise HarnessError(f"only {len(acks)} of {n} calibration writes acknowledged after {attempts} attempts")
        attempts += 1
        key = next(keys)
        run.tl.record_op("w0", "invoke", key)
        try:
            r = http.post(url, content=writer.body(key), headers={"content-type": "application/json"})
        except Exception as e:  # every transport failure is classified, never dropped
            run.tl.record_op("w0", classify(None, error=error_kind(e)), key, value={"status": None,
                                                                                     "error": describe(e)})
        else:
            kind = classify(r.status_code, outcome=r.headers.get(OUTCOME_HEADER))
            value = {"status": r.status_code, "region": r.headers.get(REGION_HEADER)}
            if kind != "ok":
                value.update(outcome=r.headers.get(OUTCOME_HEADER), error=r.text[:200])
            op = run.tl.record_op("w0", kind, key, value=value)
            if kind == "ok":
                acks.append(op)
                continue
        time.sleep(0.05)
    return acks


def _wait_routed(run: _Run, http: Any, region: str) -> float:
    """Wait until the global endpoint routes to `region` and answers /health 200 from it; returns when."""
    def routed() -> bool:
        st = router_ops.state(http, run.t.router_url)
        if st["active_region"] != region or st.get("routing_region", region) != region:
            return False
        h = app_ops.global_health(http, run.t.router_url)
        return bool(h["ok"]) and h.get("region") == region

    _lab.wait_for(routed, SWITCH_TIMEOUT_S, f"global endpoint routing to {region}", interval=0.1)
    return time.time()


def _known_loss(run: _Run, k: int) -> dict[str, Any]:
    """Cut replication, write K acknowledged vouchers, kill the primary, fail over; the meters must see K lost."""
    import httpx

    started = time.monotonic()
    rid = f"calib-{uuid.uuid4().hex[:8]}-k{k}"
    topology = run.lab.topology()
    writer = Workload.from_topology(topology, run.tl, run_id=rid, writers=1, with_probes=False,
                                    write_timeout_s=WRITE_TIMEOUT_S).writers
    assert writer is not None
    keys = (f"{rid}-w0-{n}" for n in itertools.count())
    run.tl.append("note", f"calibration: known loss K={k}", {"run_id": rid, "k": k})
    phases: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        phases[name] = round(time.monotonic() - since, 3)
        return time.monotonic()

    with httpx.Client(timeout=WRITE_TIMEOUT_S, trust_env=False) as http:
        mark = time.monotonic()
        anchors = _write_acked(run, http, writer, keys, ANCHORS)
        lsn = pg_ops.wait_caught_up(lambda: run.t.pg("primary"), lambda: run.t.pg("dr"))
        run.say(f"K={k}: {len(anchors)} anchor vouchers acknowledged, DR replayed up to {lsn}")
        mark = lap("anchors_s", mark)
        # one umbrella entry first: `drill recover` plays the adapters' reverts newest first, then fail_back
        guard.inject(LOSS_FAULT, LOSS_TARGET, revert=(fail_back, {"to_region": "primary"}),
                     regions=("primary", "dr"), components=("postgresql", "redis", "app", "router"),
                     configuration=run.cfg, details={"k": k, "run_id": rid})
        run.failed_over = True
        run.replication_cut = True
        pg_actions.cut_replication(configuration=run.cfg)
        lost = _write_acked(run, http, writer, keys, k)
        run.say(f"K={k}: replication cut, {len(lost)} vouchers acknowledged by the primary alone")
        mark = lap("writes_s", mark)
        fault = run.tl.append("fault", "primary lost with K unreplicated writes",
                              {"phase": "marker", "k": k, "run_id": rid, "target": "postgres:primary"})
        killed = pg_actions.kill_primary("primary", configuration=run.cfg)
        run.killed_pid = killed.get("pid")
        pg_actions.promote_standby("dr", configuration=run.cfg)
        with run.t.redis("dr") as rc:
            valkey_role = rd_ops.role(rc)
        if valkey_role != "master":
            rd_actions.promote_replica("dr", configuration=run.cfg)
        app_actions.scale_region("dr", DR_REPLICAS, configuration=run.cfg)
        _wait_routed(run, http, "dr")
        mark = lap("failover_s", mark)
        run.say(f"K={k}: primary killed, DR promoted, global endpoint on dr after {phases['failover_s']} s")
    final = final_read(find_primary_dsn(topology), rid)
    ops = [o for o in run.tl.ops if o.key.startswith(rid + "-")]
    counts = measure.write_counts(ops, final)
    rp = measure.rpo(ops, final, fault.t)
    # independently, from this function's own records
    lost_keys = {o.key for o in lost}
    anchor_keys = {o.key for o in anchors}
    expected_rpo = (lost[-1].t - anchors[-1].t) if lost else 0.0
    missing_anchors = sorted(anchor_keys - final)
    survived_lost = sorted(lost_keys & final)
    rpo_ok = abs(rp.rpo_s - expected_rpo) <= RPO_TOLERANCE_S
    ok = (counts.lost == k and rpo_ok and not missing_anchors and not survived_lost and counts.unexpected == 0
          and counts.failed_but_present == 0)
    run.say(f"K={k}: measured lost={counts.lost} rpo={rp.rpo_s:.6f}s (expected {k}, {expected_rpo:.6f}s); "
            "failing back")
    run.wait_reaped()
    fb = fail_back("primary", configuration=run.cfg)
    guard.mark_reverted(LOSS_FAULT, LOSS_TARGET, run.cfg, how="fail_back")
    shape = lab_shape(run.t, "primary")
    if not shape["ok"]:
        raise LabError(f"after fail_back the lab is not in shape: "
                       f"{', '.join(n for n, v in shape.items() if not v and n != 'ok')}")
    run.failed_over = run.replication_cut = False
    lap("failback_s", mark)
    run.say(f"K={k}: failed back in {phases['failback_s']} s, lab healthy on primary")
    with _lab.pg_connect(run.t.pg_dsn("primary")) as c:
        still_there = c.execute("SELECT count(*) FROM vouchers WHERE request_id = ANY(%s)",
                                (sorted(anchor_keys),)).fetchone()[0]
    return {
        "k": k, "lost_expected": k, "lost_measured": counts.lost,
        "rpo_measured_s": round(rp.rpo_s, 6), "rpo_expected_s": round(expected_rpo, 6),
        "rpo_error_ms": round(abs(rp.rpo_s - expected_rpo) * 1000, 3), "ok": ok,
        "run_id": rid, "anchors": len(anchors), "anchors_after_failback": int(still_there),
        "missing_anchors": missing_anchors, "lost_but_present": survived_lost,
        "writes": counts.to_dict(), "rpo": rp.to_dict(), "fault_at": iso(fault.t),
        "phases_s": phases, "failback_s": fb.get("seconds"), "seconds": round(time.monotonic() - started, 3),
    }


# -- (b) known delay ------------------------------------------------------------------------------
def _popbill_issued(run: _Run, http: Any) -> int:
    r = http.get(f"http://127.0.0.1:{run.t.ports['popbill']}/health", timeout=2.0)
    return int(r.json()["issued"])


def _window(run: _Run, seconds: float) -> tuple[float, float]:
    a = time.time()
    time.sleep(seconds)
    return a, time.time()


def _known_delay(run: _Run, delay_ms: int, window_s: float) -> dict[str, Any]:
    """Probe tax invoices, add a latency toxic on the Popbill proxy, and compare medians."""
    import httpx

    started = time.monotonic()
    started_t = time.time()
    topology = run.lab.topology()
    wl = Workload.from_topology(topology, run.tl, run_id=f"calib-delay-{uuid.uuid4().hex[:6]}", with_writers=False,
                                services=[DELAY_SERVICE], probe_interval_s=PROBE_INTERVAL_S,
                                probe_timeout_s=max(1.0, 2 * delay_ms / 1000 + 0.5))
    assert wl.probes is not None
    run.tl.append("note", "calibration: known delay", {"delay_ms": delay_ms, "service": DELAY_SERVICE})
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        issued0 = _popbill_issued(run, http)
        wl.start()
        try:
            time.sleep(WARMUP_S)
            base = _window(run, window_s)
            inj = guard.inject("latency_toxic", f"toxiproxy:{POPBILL_PROXY}",
                               revert=(remove_latency_toxic, {"proxy": POPBILL_PROXY, "toxic": TOXIC_NAME}),
                               regions=("primary", "dr"), components=("popbill",), configuration=run.cfg,
                               details={"latency_ms": delay_ms, "jitter_ms": 0, "stream": "downstream"})
            if not inj.proceed:
                raise HarnessError(f"latency toxic not injected: {inj.decision.reason}")
            run.toxic = True
            r = http.post(f"{run.t.toxiproxy_url}/proxies/{POPBILL_PROXY}/toxics", json={
                "name": TOXIC_NAME, "type": "latency", "stream": "downstream", "toxicity": 1.0,
                "attributes": {"latency": delay_ms, "jitter": 0}})
            if r.status_code >= 400:
                raise LabError(f"fault proxy refused the latency toxic: HTTP {r.status_code} {r.text.strip()[:200]}")
            run.say(f"delay: baseline measured; latency toxic {delay_ms} ms added on proxy {POPBILL_PROXY}")
            toxic = _window(run, window_s)
            remove_latency_toxic(configuration=run.cfg)
            run.toxic = False
        finally:
            counts = wl.stop().get("probes") or {}
        issued = _popbill_issued(run, http) - issued0
    probes = [e for e in run.tl.events if e.kind == "probe" and e.data.get("service") == DELAY_SERVICE
              and e.t >= started_t]
    stats_base = measure.latency_stats(probes, since=base[0], until=base[1]).get(DELAY_SERVICE)
    stats_toxic = measure.latency_stats(probes, since=toxic[0], until=toxic[1]).get(DELAY_SERVICE)
    if stats_base is None or stats_toxic is None or stats_base.p50_s is None or stats_toxic.p50_s is None:
        raise HarnessError(f"no {DELAY_SERVICE} probe latency recorded in a measurement window")
    invoices = sum(counts.get(DELAY_SERVICE, {}).values())
    per_invoice = issued / invoices if invoices else 0.0
    round_trips = max(1, round(per_invoice))
    expected_ms = delay_ms * round_trips
    measured_ms = (stats_toxic.p50_s - stats_base.p50_s) * 1000
    error = abs(measured_ms - expected_ms) / expected_ms
    ok = error <= DELAY_TOLERANCE and stats_base.errors == 0 and stats_toxic.errors == 0
    run.say(f"delay: baseline {stats_base.p50_s * 1000:.1f} ms, with toxic {stats_toxic.p50_s * 1000:.1f} ms, "
            f"measured {measured_ms:.1f} ms (error {error * 100:.1f} %)")
    return {
        "injected_ms": delay_ms, "baseline_ms": round(stats_base.p50_s * 1000, 3),
        "with_toxic_ms": round(stats_toxic.p50_s * 1000, 3), "measured_ms": round(measured_ms, 3),
        "expected_ms": expected_ms, "error_pct": round(error * 100, 2), "ok": ok,
        "tolerance_pct": DELAY_TOLERANCE * 100, "service": DELAY_SERVICE,
        "samples": {"baseline": stats_base.count, "with_toxic": stats_toxic.count},
        "errors": {"baseline": stats_base.errors, "with_toxic": stats_toxic.errors},
        "popbill_requests": issued, "invoice_probes": invoices,
        "popbill_requests_per_invoice": round(per_invoice, 3),
        "method": (
            f"median {DELAY_SERVICE} probe latency (POST /tax-invoices through the global endpoint, every "
            f"{PROBE_INTERVAL_S} s, meter: measure.latency_stats p50) over {window_s} s without and {window_s} s with "
            f"a downstream latency toxic ({delay_ms} ms, jitter 0) on the '{POPBILL_PROXY}' fault proxy. "
            "A downstream latency toxic holds every chunk of Popbill's answer for the latency, counted from the "
            "chunk's arrival at the proxy, so each Popbill request costs exactly one delay whether its connection "
            "is reused (the app's httpx pool keeps it alive) or new (the TCP handshake with the proxy is local and "
            f"not delayed). The Popbill stub issued {issued} references for {invoices} invoice probes "
            f"({per_invoice:.2f} per invoice), so the expected added latency is {round_trips} x {delay_ms} ms."),
        "seconds": round(time.monotonic() - started, 3),
    }


# -- (c) planted integrity faults -----------------------------------------------------------------
def _planted_integrity(run: _Run) -> list[dict[str, Any]]:
    """Copy `kerp` to a scratch database, plant one fault of each kind, and check each is named by its check."""
    import psycopg

    name = f"drill_calibrate_{uuid.uuid4().hex[:8]}"
    node = run.t.node("primary")
    rt = run.lab.pg_runtime()
    run.tl.append("note", "calibration: planted integrity faults", {"database": name})
    guard.inject("scratch_database", f"postgres:{name}", revert=(drop_scratch_database, {"name": name}),
                 regions=("primary",), components=("postgresql",), configuration=run.cfg,
                 details={"source": SOURCE_DB, "purpose": "planted integrity faults"})
    run.scratch_db = name
    with _lab.pg_connect(node.admin_dsn()) as admin:
        how = plant.scratch_copy(admin, SOURCE_DB, name, rt=rt)
    run.say(f"integrity: {SOURCE_DB} copied to {name} ({how})")
    try:
        with psycopg.connect(node.admin_dsn(name), autocommit=True, connect_timeout=5) as db:
            planted: list[tuple[str, str, list[str], str]] = []  # fault, check, offending ids expected, shown
            vid = plant.plant_unbalanced_voucher(db)
            planted.append(("unbalanced_voucher", "vouchers_balanced", [str(vid)], f"voucher {vid}"))
            aid = plant.plant_orphan_account(db)
            planted.append(("orphan_account", "account_hierarchy_no_orphans", [str(aid)], f"account {aid}"))
            lids = plant.plant_orphan_voucher_line(db)
            planted.append(("voucher_line_without_voucher", "foreign_keys_valid",
                            [f"voucher_lines:{i}" for i in lids], f"voucher_lines {', '.join(map(str, lids))}"))
            seqs = plant.plant_audit_gap(db, size=3)
            gap = f"{seqs[0]}..{seqs[-1]}" if len(seqs) > 1 else str(seqs[0])
            planted.append(("audit_sequence_gap", "audit_sequence_gap_free", [gap], f"audit seq {gap}"))
            cid, no = plant.plant_invoice_gap(db)
            planted.append(("invoice_number_gap", "invoice_numbers_gap_free", [f"{cid}:{no}"],
                            f"company {cid} invoice {no}"))
            checks = [c for c in integrity.CHECK_NAMES if c not in ("snapshot_unchanged", "pg_amcheck")]
            results = {r.check: r for r in integrity.run_all(db, only=checks)}
    finally:
        drop_scratch_database(name, configuration=run.cfg)
        run.scratch_db = None
    out = []
    for fault, check, ids, shown in planted:
        r = results.get(check)
        reported = list(r.offending) if r is not None else []
        ok = r is not None and r.status == "fail" and all(i in reported for i in ids)
        out.append({"fault": fault, "check": check, "planted": shown, "planted_ids": ids,
                    "reported": reported, "status": r.status if r else None,
                    "details": r.details if r else "check did not run", "ok": ok})
    run.say("integrity: " + ", ".join(f"{o['fault']} {'ok' if o['ok'] else 'MISSED'}" for o in out))
    return out


# -- entry point ----------------------------------------------------------------------------------
def calibrate(state_dir: str | Path | None = None, ks: Any = DEFAULT_KS, delay_ms: int = DEFAULT_DELAY_MS,
              progress: Progress | None = None, report_dir: Path | None = None,
              window_s: float = 3.0) -> dict[str, Any]:
    """Run the three calibrations against the running lab and return the result (see `drill calibrate`).

    Every fault injected is in the fault ledger before it is injected and is rolled back on the way out,
    also on SIGINT/SIGTERM (then Interrupted is raised, exit 130).
    """
    ks, delay_ms = check_inputs(tuple(ks), delay_ms)
    progress = progress or (lambda _m: None)
    lab = Lab(state_dir)
    if not lab.is_running():
        raise LabError(f"no lab is running under {lab.state} (run `drill lab up`)")
    s = drill_session.begin("calibrate", "calibrate", report_dir=report_dir)
    drill_session.register_lab_secrets(s, lab.state)
    started_at = time.time()
    t0 = time.monotonic()
    result: dict[str, Any] = {"passed": False, "loss": [], "delay": None, "integrity": [],
                              "started_at": iso(started_at), "duration_s": None, "run_id": s.run_id,
                              "report_dir": str(s.report_dir), "state_dir": str(lab.state)}
    interrupted: str | None = None
    try:
        with drill_session.SIGNALS as signals:
            run = _Run(lab, s, progress, signals)
            try:
                _preflight(run)
                run.say(f"calibrating the meters (K = {', '.join(map(str, ks))}; delay {delay_ms} ms)")
                try:
                    result["delay"] = _known_delay(run, delay_ms, window_s)
                except Exception as e:  # a broken section is a failed calibration, the others still run
                    run.say(f"delay: failed: {_one_line(e)}")
                    result["delay"] = {"injected_ms": delay_ms, "baseline_ms": None, "with_toxic_ms": None,
                                       "measured_ms": None, "error_pct": None, "ok": False, "error": _one_line(e)}
                finally:
                    run.undo()
                for k in ks:
                    try:
                        result["loss"].append(_known_loss(run, k))
                    except Exception as e:
                        run.say(f"K={k}: failed: {_one_line(e)}")
                        result["loss"].append({"k": k, "lost_expected": k, "lost_measured": None,
                                               "rpo_measured_s": None, "rpo_expected_s": None, "ok": False,
                                               "error": _one_line(e)})
                    finally:
                        run.undo()
                try:
                    result["integrity"] = _planted_integrity(run)
                except Exception as e:
                    run.say(f"integrity: failed: {_one_line(e)}")
                    result["integrity"] = [{"fault": "all", "check": None, "planted": None, "reported": [],
                                            "ok": False, "error": _one_line(e)}]
                finally:
                    run.undo()
            except KeyboardInterrupt as e:
                interrupted = str(e) or "SIGINT"
                run.undo()
                run.say(f"interrupted ({interrupted}); every injected fault is rolled back")
    finally:
        result["duration_s"] = round(time.monotonic() - t0, 3)
        result["passed"] = (not interrupted and bool(result["loss"]) and all(x["ok"] for x in result["loss"])
                            and bool(result["delay"] and result["delay"]["ok"])
                            and bool(result["integrity"]) and all(x["ok"] for x in result["integrity"]))
        s.ended_at = time.time()
        try:
            (s.report_dir / "calibration.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        finally:
            drill_session.end()
    if interrupted:
        raise Interrupted(f"calibration interrupted by {interrupted}; every injected fault was rolled back")
    return result
